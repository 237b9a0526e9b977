"""Put a dataset on disk in the CIFAR-10 python layout, once.

    python -m labs.prepare_data --data-dir data --dataset synthetic   # seeded, ~1 s, no network
    python -m labs.prepare_data --data-dir data --dataset cifar10     # downloads 163 MB
    python -m labs.prepare_data --data-dir data --dataset cifar10 --archive cifar-10-python.tar.gz

Result: `DATA_DIR/<dataset>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}` and,
written last and atomically, `DATA_DIR/<dataset>/.complete`. With the marker present the command
prints "data ready" and exits 0 without touching anything, so it is safe to run in every pod
start (an init container) or before every training run.

cifar10: the tarball from https://www.cs.toronto.edu/~kriz/ (downloaded only by this command, only
for `--dataset cifar10`; `--archive` uses a copy you already have) is checked against its MD5 and
extracted with every member path checked, so a malicious archive cannot write outside DATA_DIR.

Exit codes: 0 ready, 1 download/checksum/archive error, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from labs.common import data

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"


class DataError(RuntimeError):
    """The data could not be prepared (network, checksum, unsafe or incomplete archive)."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path) -> None:
    """Stream `url` to `dest` (via a `.part` file), printing progress every ~10%."""
    part = dest.with_name(dest.name + ".part")
    print(f"downloading {url}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while block := response.read(1 << 20):
                f.write(block)
                done += len(block)
                if total and done / total >= next_report:
                    print(f"  {done / 2**20:6.1f} / {total / 2**20:.1f} MiB", flush=True)
                    next_report += 0.1
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {e}") from e
    part.replace(dest)


def verify_md5(path: Path, expected: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise DataError(f"checksum mismatch for {path}: md5 {actual}, expected {expected}")
    print(f"checksum ok ({expected})", flush=True)


def safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, or DataError if any could escape the destination folder:
    absolute paths, `..` components, links, devices."""
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(f"unsafe path in archive: {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"unsupported member in archive (link or device): {m.name!r}")
    return members


def extract_cifar(archive: Path, data_dir: Path, dataset: str = "cifar10") -> Path:
    """Extract into a staging folder next to the destination, check the expected files, move it
    into place and write the `.complete` marker."""
    root = data.dataset_root(data_dir, dataset)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    staging.chmod(0o755)
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # `filter="data"` is the standard library's own guard (Python >= 3.10.12/3.11.4);
                # ours runs first and gives a clear message.
                guard = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=safe_members(tar), **guard)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"cannot extract {archive}: {e}") from e
        extracted = staging / data.BATCHES_DIRNAME
        expected = [*data.TRAIN_FILES, data.TEST_FILE, data.META_FILE]
        missing = [n for n in expected if not (extracted / n).is_file()]
        if missing:
            raise DataError(f"{archive} lacks {data.BATCHES_DIRNAME}/{', '.join(missing)}")
        return data.install_batches_dir(extracted, data_dir, dataset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_cifar10(
    data_dir: Path, archive: Path | None = None, expected_md5: str = CIFAR10_MD5
) -> Path:
    """Download (or take `archive`), verify and extract the real CIFAR-10."""
    if archive is None:
        archive = data.dataset_root(data_dir, "cifar10") / ARCHIVE_NAME
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not (archive.is_file() and md5sum(archive) == expected_md5):
            download(CIFAR10_URL, archive)
    elif not archive.is_file():
        raise DataError(f"--archive {archive}: no such file")
    verify_md5(archive, expected_md5)
    return extract_cifar(archive, data_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labs.prepare_data",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="root of all datasets")
    p.add_argument("--dataset", choices=("cifar10", "synthetic"), required=True)
    p.add_argument("--synthetic-train", type=int, default=5000, help="synthetic training images")
    p.add_argument("--synthetic-test", type=int, default=1000, help="synthetic test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--archive", type=Path, help="use this cifar-10-python.tar.gz, no download")
    # For tests: a small tarball built on the fly has its own checksum.
    p.add_argument("--expected-md5", default=CIFAR10_MD5, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.synthetic_train < 5 or args.synthetic_test < 1:
        print("error: --synthetic-train must be >= 5 and --synthetic-test >= 1", file=sys.stderr)
        return 2
    if data.is_complete(args.data_dir, args.dataset):
        print("data ready", flush=True)
        return 0
    try:
        if args.dataset == "synthetic":
            data.prepare_synthetic(
                args.data_dir,
                args.synthetic_train,
                args.synthetic_test,
                args.seed,
                log=lambda m: print(m, flush=True),
            )
        else:
            folder = prepare_cifar10(args.data_dir, args.archive, args.expected_md5)
            print(f"extracted CIFAR-10 to {folder}", flush=True)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print("data ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
