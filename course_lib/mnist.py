"""MNIST (and Fashion-MNIST) as image tensors for diffusion: float32 (N, 1, size, size) in [-1, 1].

`load_mnist` has three sources:
- "shipped": the 4,500 train / 500 test digits bundled in `course_lib/data/mnist_subset.npz`
  (a fixed, stratified subset of real MNIST; see `course_lib/data/MNIST_LICENSE.md`). Never needs a network.
- "full": the real 60,000 / 10,000 MNIST, downloaded once from `MNIST_MIRRORS` as the four IDX gz
  files, checked against `MNIST_MD5` and cached under `~/.cache/diffusion-course/mnist`.
- "auto" (the default): "full" if it can be had, else one printed line and the shipped subset.
`load_train20k` gives 20,000 digits to train a model on more than the subset: its 4,500 train digits and 15,500 more
(`course_lib/data/mnist_extra.npz`), none of them a test digit.
Downloads go to a temporary `.part` file that is renamed only after its MD5 matches, so a cache file
is either complete or absent; a cache file that fails its check is reported, deleted and fetched again.

The IDX format (LeCun's): 2 zero bytes, a dtype code, the number of dims, each dim as a big-endian
int32, then the values, big-endian, C order. `read_idx` parses it, for MNIST and Fashion-MNIST alike.
"""
import gzip
import hashlib
import os
import pathlib
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
MNIST_MD5 = {  # the well-known checksums of the original files
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IDX_FILES = {  # split -> (images file, labels file); Fashion-MNIST uses the same names
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEFAULT_ROOT = pathlib.Path("~/.cache/diffusion-course/mnist")
SHIPPED_PATH = pathlib.Path(__file__).resolve().parent / "data" / "mnist_subset.npz"
EXTRA_PATH = SHIPPED_PATH.with_name("mnist_extra.npz")  # 15,500 more train digits, for the shipped eps-model
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SOURCES = ("auto", "shipped", "full")

# IDX dtype codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------- the IDX reader

def read_idx(path):
    """Read an IDX file, gzipped or plain, into a numpy array of the shape its header states.

    Raises ValueError on a bad magic number, an unknown dtype code, or a file whose length does not
    match its header (truncated or padded). uint8 files come back as uint8, others in native byte order.
    """
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise ValueError(f"{path.name}: cannot decompress ({e}); the file is truncated or corrupt") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path.name}: bad magic number {data[:4].hex() or 'empty file'}; an IDX file starts with two "
            "zero bytes, a dtype code and the number of dims (e.g. 00000803 for MNIST images)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path.name}: unknown IDX dtype code 0x{code:02x}; expected one of 08 09 0b 0c 0d 0e")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path.name}: truncated header ({len(data)} bytes, {ndim} dims need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path.name}: {len(data):,} bytes but its header {shape} of {dtype.name} needs {expected:,}; "
            "the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


# ---------------------------------------------------------------- download + cache

class DownloadError(OSError):
    """No mirror gave a file with the right checksum; `reason` is a short human summary."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolve(url, timeout):
    """Look up the URL's host in a thread, so a DNS server that never answers cannot hang us."""
    parts = urllib.parse.urlsplit(url)
    result = {}

    def lookup():
        try:
            port = parts.port or {"http": 80}.get(parts.scheme, 443)
            socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise socket.timeout(f"DNS lookup of {parts.hostname} timed out")
    if "error" in result:
        raise result["error"]


def _is_timeout(error):
    error = getattr(error, "reason", error)  # URLError wraps the socket error
    return isinstance(error, (socket.timeout, TimeoutError))


def _reason(error, timeout):
    """A few words on why a download failed, for the one-line messages."""
    if _is_timeout(error):
        return f"timed out after {timeout:g} s"
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    error = getattr(error, "reason", error)
    if isinstance(error, socket.gaierror):
        return "cannot resolve the mirror's host name"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return str(error) or type(error).__name__


def _download(url, dest, md5, timeout, verbose):
    """Stream url into a temp file beside dest; rename it to dest only if its MD5 is md5."""
    _resolve(url, timeout)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            if verbose:  # only once the mirror answered, so a blocked network prints one line, not many
                print(f"[mnist] downloading {url}")
            for block in iter(lambda: response.read(1 << 16), b""):  # timeout applies to each read
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise ValueError(f"MD5 mismatch for {url}: got {h.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch_mnist_file(name, root=None, timeout=5.0, verbose=True, stop_on_timeout=False):
    """Path of the verified MNIST file `name` in the cache `root`, downloading it if needed.

    A cached file that fails its MD5 is reported, deleted and downloaded again. Mirrors are tried in
    order; raises DownloadError when none works (at once after a timeout if stop_on_timeout).
    """
    if name not in MNIST_MD5:
        raise ValueError(f"unknown MNIST file {name!r}; expected one of {sorted(MNIST_MD5)}")
    root = pathlib.Path(root if root is not None else DEFAULT_ROOT).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    dest, md5 = root / name, MNIST_MD5[name]
    if dest.exists():
        if _md5(dest) == md5:
            return dest
        if verbose:
            print(f"[mnist] cached {dest} failed its MD5 check (corrupt or partial); deleting it and downloading again")
        dest.unlink()
    reasons = []
    for mirror in MNIST_MIRRORS:
        url = mirror + name
        try:
            _download(url, dest, md5, timeout, verbose)
            return dest
        except ValueError as e:  # checksum mismatch: try the next mirror
            reasons.append(("download failed its MD5 check", e))
        except (OSError, urllib.error.URLError) as e:  # URLError, HTTPError, timeouts, refusals
            reasons.append((_reason(e, timeout), e))
            if stop_on_timeout and _is_timeout(e):
                break
    summary = "; ".join(dict.fromkeys(r for r, _ in reasons)) or "no mirror listed in MNIST_MIRRORS"
    details = "\n".join(f"  {r}: {e}" for r, e in reasons)
    raise DownloadError(f"could not download {name} from any mirror ({summary}):\n{details}", summary)


# ---------------------------------------------------------------- tensors

def _check_args(split, size):
    if split not in IDX_FILES:
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    if isinstance(size, bool) or not isinstance(size, int) or not (4 <= size <= 28 or size == 32):
        raise ValueError(
            f"size={size!r} is not supported: use 28 (native), 32 (zero-padded, so a U-Net can halve it "
            "5 times) or an int from 4 to 27 (area-downsampled, e.g. 16 for fast lecture training)"
        )


def to_tensors(images, labels, size=28):
    """uint8 (N, 28, 28) images and (N,) labels -> float32 (N, 1, size, size) in [-1, 1], int64 (N,).

    0 -> -1 (background) and 255 -> +1 exactly. size < 28 area-averages; size 32 pads with -1.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)  # (N, 1, 28, 28)
    x = x / 127.5 - 1.0
    if size == 32:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # (N, 1, 32, 32), background border
    elif size != 28:
        x = F.interpolate(x, size=(size, size), mode="area")  # (N, 1, size, size)
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))  # (N,)
    return x, y


def _load_idx_pair(folder, split, what):
    images_file, labels_file = IDX_FILES[split]
    images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise ValueError(
            f"{what} {split}: images {images.shape} and labels {labels.shape} should be (N, 28, 28) and (N,)"
        )
    return images, labels


def load_shipped(split="train"):
    """The shipped subset as numpy: uint8 images (N, 28, 28), int64 labels (N,); N = 4,500 or 500."""
    if split not in IDX_FILES:
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    with np.load(SHIPPED_PATH) as data:
        return data[f"{split}_images"], data[f"{split}_labels"]


def load_train20k(size=28):
    """The 20,000 digits the shipped eps-model learns from: (N, 1, size, size) in [-1, 1], (N,) int64; N = 20,000.

    The subset's 4,500 train digits and the 15,500 of `mnist_extra.npz` (2,000 of each class, none a test digit),
    class by class in that order: training draws batches at random, so the order only fixes what a seed draws.
    """
    _check_args("train", size)
    images, labels = load_shipped("train")
    with np.load(EXTRA_PATH) as extra:
        images = np.concatenate([images, extra["images"]])
        labels = np.concatenate([labels, extra["labels"]])
    order = np.argsort(labels, kind="stable")
    return to_tensors(images[order], labels[order], size=size)


def load_mnist(split="train", source="auto", size=28, root=None, timeout=5.0, verbose=True):
    """MNIST digits as (images, labels): float32 (N, 1, size, size) in [-1, 1], int64 (N,) in 0..9.

    source: "shipped" (4,500 train / 500 test, offline), "full" (60,000 / 10,000, downloaded once
    into `root`, default ~/.cache/diffusion-course/mnist) or "auto" (full, else one printed line and
    the shipped subset). `timeout` is the per-connection socket timeout in seconds.
    """
    _check_args(split, size)
    if source not in SOURCES:
        raise ValueError(f"source={source!r} must be one of {SOURCES}: 'shipped' never uses the network")
    if not timeout > 0:
        raise ValueError(f"timeout={timeout!r} must be > 0 seconds: it bounds every network wait")
    if source == "shipped":
        return to_tensors(*load_shipped(split), size=size)
    try:
        paths = [
            fetch_mnist_file(name, root, timeout, verbose, stop_on_timeout=(source == "auto"))
            for name in IDX_FILES[split]
        ]
        images, labels = _load_idx_pair(paths[0].parent, split, "MNIST")
    except DownloadError as e:
        if source == "full":
            raise DownloadError(
                f"{e}\nUse load_mnist(source='shipped') for the subset that ships with course_lib.", e.reason
            ) from None
        images, labels = load_shipped(split)
        if verbose:
            print(f"[mnist] could not get the full MNIST ({e.reason}); using the shipped {len(labels):,}-digit {split} subset")
        return to_tensors(images, labels, size=size)
    return to_tensors(images, labels, size=size)


def load_fashion_mnist(split="train", size=28, root=None):
    """Fashion-MNIST as (images, labels): float32 (N, 1, size, size) in [-1, 1], int64 (N,) in 0..9.

    Reads the IDX files of Debian's `dataset-fashion-mnist` package (60,000 train / 10,000 test) from
    /usr/share/datasets/fashion-mnist, or from `root`. Class names: FASHION_MNIST_CLASSES.
    """
    _check_args(split, size)
    folder = pathlib.Path(root).expanduser() if root is not None else FASHION_MNIST_DIR
    missing = [name for name in IDX_FILES[split] if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {folder} lacks {', '.join(missing)}. On Debian or Ubuntu install it "
            "with `sudo apt-get install dataset-fashion-mnist` (it puts the four IDX files in "
            f"{FASHION_MNIST_DIR}), or pass root= a folder holding them."
        )
    return to_tensors(*_load_idx_pair(folder, split, "Fashion-MNIST"), size=size)


def class_balanced(labels, n):
    """Indices of n examples taking the classes in turn (0, 1, ..., 9, 0, ...), each the first not yet taken.

    The shipped subset is sorted by class, so `images[:8]` would be eight zeros; `images[class_balanced(labels, 8)]`
    is one each of the digits 0 to 7. labels: (N,) int tensor. Returns a LongTensor (n,).
    """
    classes = sorted(set(labels.tolist()))
    queues = {c: (labels == c).nonzero().flatten().tolist() for c in classes}
    picked = []
    while len(picked) < n:
        available = [c for c in classes if queues[c]]
        if not available:
            raise ValueError(f"only {len(picked)} examples; asked for {n}")
        for c in available:
            if len(picked) < n:
                picked.append(queues[c].pop(0))
    return torch.tensor(picked, dtype=torch.long)
