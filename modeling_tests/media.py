"""
Real media for tests: photos bundled with scikit-image, and a real video from Debian's `opencv-doc` package.

The video (`Megamind.avi`: 270 frames, 720x528, MPEG-4 Part 2, 23.976 fps, 1.2 MB) is extracted once into a cache
directory (`$SCL_TEST_MEDIA`, default `~/.cache/transformers-scl-test-media`) with `apt-get download opencv-doc` and
`dpkg-deb --fsys-tarfile`. Where that is impossible (no apt, no network) tests that need it are skipped with the reason.
"""

import functools
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import PIL.Image

VIDEO_NAME = "Megamind.avi"
VIDEO_NUM_FRAMES = 270
VIDEO_SIZE = (528, 720)  # (height, width)
_DEB_PACKAGE = "opencv-doc"
_DEB_MEMBER = f"usr/share/doc/opencv-doc/examples/data/{VIDEO_NAME}"
_TIMEOUT_S = 600


def sample_image(name: str = "chelsea") -> PIL.Image.Image:
    """A real RGB photo bundled with scikit-image: `"chelsea"` (a cat, 451x300 px) or `"astronaut"` (512x512 px)."""
    import skimage.data

    return PIL.Image.fromarray(getattr(skimage.data, name)())


def media_cache_dir() -> Path:
    return Path(os.environ.get("SCL_TEST_MEDIA", Path.home() / ".cache" / "transformers-scl-test-media"))


def _run(command: list[str], cwd: str) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, timeout=_TIMEOUT_S)


def _extract_video(target: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not found (not a Debian-based system)")
    with tempfile.TemporaryDirectory() as workdir:
        try:
            _run(["apt-get", "download", _DEB_PACKAGE], cwd=workdir)
        except subprocess.CalledProcessError:
            _run(["apt-get", "update"], cwd=workdir)  # the package lists may be missing or stale
            _run(["apt-get", "download", _DEB_PACKAGE], cwd=workdir)
        (deb,) = Path(workdir).glob(f"{_DEB_PACKAGE}_*.deb")
        # stream the package's file tree and keep only the one video (the .deb is ~95 MB)
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as dpkg:
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tree:
                for member in tree:
                    if member.name.lstrip("./") == _DEB_MEMBER and member.isfile():
                        partial = target.with_suffix(".partial")
                        with tree.extractfile(member) as data, open(partial, "wb") as out:
                            shutil.copyfileobj(data, out)
                        os.replace(partial, target)
                        break
            dpkg.kill()
    if not target.is_file():
        raise RuntimeError(f"{_DEB_MEMBER} not found in {_DEB_PACKAGE}")


@functools.cache
def _sample_video() -> tuple[str | None, str]:
    target = media_cache_dir() / VIDEO_NAME
    if not target.is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_video(target)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or b""
            return None, f"cannot get {VIDEO_NAME} from Debian's {_DEB_PACKAGE}: {error} {detail.decode()[-300:]}"
    return str(target), ""


def sample_video_path() -> str | None:
    """Path of the real test video, extracting it on first use; `None` if that is impossible here."""
    return _sample_video()[0]


def require_sample_video() -> str:
    """Path of the real test video, or skip the calling test with the reason it is unavailable."""
    import pytest

    path, reason = _sample_video()
    if path is None:
        pytest.skip(reason)
    return path
