"""course_lib.mnist: the shipped subset, the IDX reader, download + verify + cache, and the offline fallback.

No test reaches the internet: "mirrors" are a local http.server, a closed port and a socket that never answers.
"""
import functools
import gzip
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest
import torch

from course_lib import mnist


# ---------------------------------------------------------------- helpers

def write_idx(path, array, gz):
    """Write `array` as an IDX file (uint8 or int32), gzipped if gz."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist_dir(folder, n_train=20, n_test=10):
    """Small fake MNIST IDX gz files in folder; returns their MD5 table."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images_file, labels_file = mnist.IDX_FILES[split]
        write_idx(folder / images_file, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=True)
        write_idx(folder / labels_file, (np.arange(n) % 10).astype(np.uint8), gz=True)
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in mnist.MNIST_MD5}


@pytest.fixture
def no_proxy(monkeypatch):
    """Local test mirrors must be reached directly, never through a proxy from the environment."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def closed_url():
    """A local URL whose port refuses connections at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def silent_url():
    """A local URL whose server accepts the connection and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)  # the kernel completes the handshake; nobody ever reads or replies
    yield f"http://127.0.0.1:{s.getsockname()[1]}/"
    s.close()


@pytest.fixture
def http_mirror(tmp_path):
    """A local http.server serving fake MNIST files; yields (url, md5 table, request log)."""
    served = tmp_path / "served"
    md5 = fake_mnist_dir(served)
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, log, served
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- shipped subset

@pytest.mark.parametrize("split, n", [("train", 4500), ("test", 500)])
def test_shipped_subset_shapes_range_and_balance(split, n):
    x, y = mnist.load_mnist(split, source="shipped")
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0, "uint8 0 and 255 must map to exactly -1 and +1"
    counts = torch.bincount(y, minlength=10)
    assert (counts == n // 10).all(), f"classes should be balanced, got counts {counts.tolist()}"


def test_shipped_train_and_test_share_no_image():
    train, _ = mnist.load_shipped("train")
    test, _ = mnist.load_shipped("test")
    train_set = {img.tobytes() for img in train}
    shared = sum(img.tobytes() in train_set for img in test)
    assert shared == 0, f"{shared} test images also appear in train: the held-out split leaks"


def test_train20k_holds_the_subset_and_new_digits_but_no_test_digit():
    """load_train20k: 2,000 of each class, class by class; the subset's 4,500 train digits, 15,500 new ones, no test
    digit and no repeated image (a repeat would weight that digit twice in training)."""
    x, y = mnist.load_train20k()
    assert x.shape == (20000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (torch.bincount(y, minlength=10) == 2000).all() and (y.diff() >= 0).all(), "class by class, 2,000 each"
    images = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()  # back to the stored uint8 pixels
    stored = {img.tobytes() for img in images}
    assert len(stored) == 20000, f"{20000 - len(stored)} repeated images"
    subset_train, _ = mnist.load_shipped("train")
    test, _ = mnist.load_shipped("test")
    assert all(img.tobytes() in stored for img in subset_train), "the subset's train digits must all be in"
    assert not any(img.tobytes() in stored for img in test), "a held-out test digit is in the training data"
    x16, _ = mnist.load_train20k(size=16)
    assert x16.shape == (20000, 1, 16, 16)


@pytest.mark.parametrize("size", [16, 28, 32])
def test_sizes(size):
    x, _ = mnist.load_mnist("test", source="shipped", size=size)
    assert x.shape == (500, 1, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    if size == 32:
        border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten(), x[..., :2].flatten()])
        assert (border == -1.0).all(), "size=32 must pad with the background value -1"
        x28, _ = mnist.load_mnist("test", source="shipped")
        assert torch.equal(x[..., 2:30, 2:30], x28)
    if size == 16:
        x28, _ = mnist.load_mnist("test", source="shipped")
        # area averaging (adaptive avg-pool, windows of 1.75 pixels) keeps each image's mean ink closely
        assert torch.allclose(x.mean(dim=(1, 2, 3)), x28.mean(dim=(1, 2, 3)), atol=0.05)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, "split='val'"),
    ({"source": "web"}, "source='web'"),
    ({"size": 30}, "size=30"),
    ({"size": 16.0}, "size=16.0"),
    ({"timeout": 0}, "timeout=0"),
])
def test_bad_arguments_teach(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mnist.load_mnist(**{"source": "shipped", **kwargs})


# ---------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype, shape", [(np.uint8, (3, 28, 28)), (np.uint8, (7,)), (np.int32, (2, 3))])
def test_read_idx_round_trips(tmp_path, gz, dtype, shape):
    array = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    array = array * (-1 if dtype == np.int32 else 1)
    out = mnist.read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert out.shape == shape and out.dtype == dtype and np.array_equal(out, array)


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x50\x4b\x03\x04" + bytes(100)))
    with pytest.raises(ValueError, match="bad magic"):
        mnist.read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects_truncated(tmp_path, gz):
    path = write_idx(tmp_path / "a.idx", np.zeros((5, 28, 28), np.uint8), gz)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        mnist.read_idx(path)


# ---------------------------------------------------------------- offline fallback

def test_auto_falls_back_at_once_when_refused(monkeypatch, capsys, tmp_path, no_proxy, closed_url):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_url, closed_url])
    start = time.perf_counter()
    x, y = mnist.load_mnist("train", root=tmp_path, timeout=1)
    elapsed = time.perf_counter() - start
    assert x.shape == (4500, 1, 28, 28) and elapsed < 3, f"fallback took {elapsed:.1f} s"
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "connection refused" in lines[0] and "shipped 4,500-digit" in lines[0], lines
    assert not list(tmp_path.iterdir()), "a failed download must leave no file behind"


def test_auto_falls_back_when_server_never_answers(monkeypatch, capsys, tmp_path, no_proxy, silent_url):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [silent_url, silent_url])
    start = time.perf_counter()
    x, y = mnist.load_mnist("test", root=tmp_path, timeout=1)
    elapsed = time.perf_counter() - start
    assert x.shape == (500, 1, 28, 28) and elapsed < 3, f"fallback took {elapsed:.1f} s with timeout=1"
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "timed out after 1 s" in lines[0] and "shipped 500-digit" in lines[0], lines
    assert not list(tmp_path.iterdir()), "a timed-out download must leave no .part file behind"


def test_full_raises_instead_of_falling_back(monkeypatch, tmp_path, no_proxy, closed_url):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_url])
    with pytest.raises(mnist.DownloadError, match="source='shipped'"):
        mnist.load_mnist("test", source="full", root=tmp_path, verbose=False)


def test_corrupt_cache_is_reported_and_deleted(monkeypatch, capsys, tmp_path, no_proxy, closed_url):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_url])
    cached = tmp_path / "t10k-images-idx3-ubyte.gz"
    cached.write_bytes(b"\x1f\x8b partial download")
    x, _ = mnist.load_mnist("test", root=tmp_path, timeout=1)
    out = capsys.readouterr().out
    assert "failed its MD5 check" in out and "deleting it" in out
    assert not cached.exists(), "a corrupt cache file must be deleted, never half-loaded"
    assert x.shape == (500, 1, 28, 28) and "shipped 500-digit" in out


# ---------------------------------------------------------------- real download path, local server

def test_download_verify_cache_then_reuse(monkeypatch, capsys, tmp_path, no_proxy, closed_url, http_mirror):
    url, md5, log, served = http_mirror
    monkeypatch.setattr(mnist, "MNIST_MD5", md5)
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_url, url])  # first mirror down: the second is used
    root = tmp_path / "cache"
    x, y = mnist.load_mnist("train", source="full", root=root, size=32)
    assert x.shape == (20, 1, 32, 32) and y.tolist() == [i % 10 for i in range(20)]
    expected = mnist.read_idx(served / "train-images-idx3-ubyte.gz")
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(expected).float() / 127.5 - 1)
    assert sorted(p.name for p in root.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert len(log) == 2 and "downloading" in capsys.readouterr().out

    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_url])  # network gone: the cache must serve
    x2, y2 = mnist.load_mnist("train", root=root, size=32)
    assert torch.equal(x, x2) and torch.equal(y, y2) and len(log) == 2
    assert capsys.readouterr().out == "", "a verified cache needs no network and prints nothing"


def test_checksum_mismatch_keeps_nothing(monkeypatch, capsys, tmp_path, no_proxy, http_mirror):
    url, md5, log, _ = http_mirror
    monkeypatch.setattr(mnist, "MNIST_MD5", {**md5, "t10k-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [url])
    root = tmp_path / "cache"
    x, _ = mnist.load_mnist("test", root=root, timeout=1)
    out = capsys.readouterr().out
    assert x.shape == (500, 1, 28, 28) and "MD5" in out and "shipped 500-digit" in out
    assert not list(root.iterdir()), "a file that fails its checksum must not reach the cache"


# ---------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        mnist.load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_reads_idx_from_root(tmp_path):
    fake_mnist_dir(tmp_path)
    x, y = mnist.load_fashion_mnist("test", root=tmp_path, size=16)
    assert x.shape == (10, 1, 16, 16) and y.tolist() == list(range(10))


@pytest.mark.skipif(
    not all((mnist.FASHION_MNIST_DIR / f).exists() for pair in mnist.IDX_FILES.values() for f in pair),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_debian_package_loads():
    x_train, y_train = mnist.load_fashion_mnist("train")
    x_test, y_test = mnist.load_fashion_mnist("test")
    assert len(x_train) + len(x_test) == 70_000 and x_train.shape[1:] == (1, 28, 28)
    assert x_test.min() == -1.0 and x_test.max() == 1.0
    assert (torch.bincount(y_test, minlength=10) == 1000).all()


def test_class_balanced_takes_the_classes_in_turn():
    from course_lib.mnist import class_balanced

    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # sorted by class, as the shipped subset is
    assert class_balanced(labels, 5).tolist() == [0, 3, 5, 1, 4]
    images, labels = mnist.load_mnist("test", source="shipped", verbose=False)
    assert labels[class_balanced(labels, 10)].tolist() == list(range(10))
    with pytest.raises(ValueError, match="only 6 examples"):
        class_balanced(torch.tensor([0, 0, 0, 1, 1, 2]), 7)
