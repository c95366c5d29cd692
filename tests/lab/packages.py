"""The lab's packages: real wheels from the upstream index, cached once per package set, plus
small wheels made here that exist only on the feed or only on the second index."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_SET = HERE / "packages.txt"
# The lab Pythons: Debian 11, 12 and 13.
PYTHONS = ("3.9", "3.11", "3.13")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")

FEED_ONLY = ("lab-feedonly", "1.0.0")
OTHER_ONLY = ("lab-otheronly", "1.0.0")


def cache_root() -> Path:
    root = os.environ.get("PIPFEED_LAB_CACHE") or Path.home() / ".cache" / "pipfeed-lab"
    return Path(root)


# How a machine points TLS clients at its own CA bundle. A client of the lab's feed must not
# inherit them: requests lets REQUESTS_CA_BUNDLE win over twine's own --cert, for one.
CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def controller_env(for_lab: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a controller-side pip or twine: none of the machine's pip settings
    (its /etc/pip.conf, PIP_* variables), and, for the lab's feed, none of its CA overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and not (for_lab and k in CA_OVERRIDES)}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


# The lab's wheelhouse: a pinned subset of the package set with compiled wheels (cryptography,
# cffi, numpy, pydantic-core, charset-normalizer, uv) and its whole dependency tree, for every
# lab Python. The lab inventory names it as pipfeed_wheelhouse_requirements; the wheelhouse tests
# use it too.
WHEELHOUSE_NAMES = frozenset({
    "requests", "certifi", "charset-normalizer", "idna", "urllib3", "cryptography", "cffi",
    "pycparser", "numpy", "pydantic", "pydantic-core", "annotated-types", "typing-extensions",
    "typing-inspection", "uv"})


def _package_lines() -> list[str]:
    lines = []
    for raw in PACKAGE_SET.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def wheelhouse_set() -> list[str]:
    """The wheelhouse's requirement lines, markers kept (the role evaluates them per host)."""
    from packaging.requirements import Requirement

    return [line for line in _package_lines() if Requirement(line).name in WHEELHOUSE_NAMES]


def wheelhouse_pins(python: str) -> list[str]:
    """The wheelhouse's pins for one target Python."""
    from packaging.requirements import Requirement

    return [pin for pin in requirements_for(python)
            if Requirement(pin).name in WHEELHOUSE_NAMES]


def requirements_for(python: str) -> list[str]:
    """The package set's pins for one target Python.

    pip evaluates environment markers against the Python that runs it, not against
    --python-version, so the markers are resolved here, for the target.
    """
    from packaging.requirements import Requirement

    environment = {"python_version": python, "python_full_version": python + ".0"}
    pins = []
    for line in _package_lines():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            pins.append(f"{requirement.name}{requirement.specifier}")
    return pins


def set_key(pythons=PYTHONS) -> str:
    material = PACKAGE_SET.read_bytes() + repr((pythons, PLATFORMS)).encode()
    return hashlib.sha256(material).hexdigest()[:12]


def download_once(name: str, key: str, sets: list[tuple[str, str]], log=sys.stderr,
                  platforms=PLATFORMS) -> Path:
    """Wheels downloaded once into the cache directory ``name`` and kept there: for each
    (target Python, requirements text) of ``sets``, every pin for that Python and the lab's
    platforms (or those given), binary only, without dependencies (the pins are the whole
    closure). Requirements with ``--hash`` options are checked by pip (hash-checking mode). A
    download that dies leaves only a ``.partial`` directory, which the next call finishes."""
    target = cache_root() / name
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    index = os.environ.get("PIPFEED_LAB_UPSTREAM", "https://pypi.org/simple/")
    for python, requirements in sets:
        abi = "cp" + python.replace(".", "")
        print(f"lab: downloading {name} for Python {python}", file=log)
        pins = partial / f"requirements-{python}.txt"
        pins.write_text(requirements)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--index-url", index, "--dest", str(partial),
               "--python-version", python, "--implementation", "cp",
               "--abi", abi, "--abi", "abi3", "--abi", "none", "--requirement", str(pins)]
        for platform in platforms:
            cmd += ["--platform", platform]
        subprocess.run(cmd, check=True, env=controller_env())
        pins.unlink()
    (partial / ".complete").write_text(key + "\n")
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return target


def ensure_wheels(pythons=PYTHONS, log=sys.stderr) -> Path:
    """Download the package set for every lab Python once; later calls return the cache."""
    key = set_key(pythons)
    return download_once(f"wheels-{key}", key,
                         [(python, "\n".join(requirements_for(python)) + "\n")
                          for python in pythons], log=log)


# ansible-core and the dependencies the package set lacks, for a Debian 12 VM (Python 3.11)
# whose first boot installs ansible-core from the feed (playbooks/cloud_init.yml). Cached like
# the package set; the cloud-init test uploads them to its lab's feed.
BOOTSTRAP_PINS = ("ansible-core==2.19.14", "jinja2==3.1.6", "markupsafe==3.0.4",
                  "resolvelib==1.2.1")


def ensure_bootstrap_wheels(log=sys.stderr) -> Path:
    """Download the first-boot wheels once; later calls return the cache."""
    key = hashlib.sha256(repr((BOOTSTRAP_PINS, PLATFORMS)).encode()).hexdigest()[:12]
    return download_once(f"bootstrap-{key}", key, [("3.11", "\n".join(BOOTSTRAP_PINS) + "\n")],
                         log=log)


# A second controller of the lab (tests/lab/controller.py): a Debian 13 container whose venv
# holds the newest ansible-core of requirements/controller.txt for Python 3.12 and later, and
# its dependencies, for its Python 3.13, installed offline with these hashes.
CONTROLLER_PYTHON = "3.13"
CONTROLLER_PINS = (
    "ansible-core==2.21.5 --hash=sha256:08886f9f3e23d129aa98a01271c4a47833516e1cb7c737a246788cb474f41222",
    "cffi==2.1.1 --hash=sha256:a931079504ecc49efed7744c476a5c343a92fabf66dec2db95edb1b2fdc770e2",
    "cryptography==50.0.2 --hash=sha256:4061c0079120205fb760c58acab6443e217307dcf05e3702cf970e0689972856",
    "jinja2==3.1.6 --hash=sha256:85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67",
    "markupsafe==3.0.4 --hash=sha256:434139499bb20b502ed3baa1f169e618f924a97e7a777fea1a49446d80106cf6",
    "packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2",
    "pycparser==3.12 --hash=sha256:a076f3f489b39b43ed13563a1dafe42447445bec2e294154ec5c57fcdda4c85e",
    "pyyaml==6.0.4 --hash=sha256:50588147ab2c6a59b5f990a4905db80899a6c2bd197e046a6201f1e67587e794",
    "resolvelib==1.2.1 --hash=sha256:fb06b66c8da04172d9e72a21d7d06186d8919e32ae5ab5cdf5b9d920be805ac2",
)


def ensure_controller_wheels(log=sys.stderr) -> Path:
    """Download the second controller's wheels once; later calls return the cache."""
    key = hashlib.sha256(repr((CONTROLLER_PINS, PLATFORMS)).encode()).hexdigest()[:12]
    return download_once(f"controller-{key}", key,
                         [(CONTROLLER_PYTHON, "\n".join(CONTROLLER_PINS) + "\n")], log=log)


# Another wheel of a release the lab's feed serves: cryptography 50.0.2 for CPython 3.11+ (abi3)
# as PyPI also has it, manylinux2014 (glibc 2.17) where the package set has manylinux_2_28. Two
# controllers whose pips differ chose one or the other for the same host (issue 18); a test adds
# it to its lab's feed.
VARIANT_PINS = (
    "cryptography==50.0.2 --hash=sha256:630ebfea3bf689d075f82316324ff7433dc447fe6bc1bfc76524b74b4a9567d2",
)
VARIANT_PLATFORMS = ("manylinux2014_x86_64",)


def ensure_variant_wheels(log=sys.stderr) -> Path:
    """Download the variant wheels once; later calls return the cache."""
    key = hashlib.sha256(repr((VARIANT_PINS, VARIANT_PLATFORMS)).encode()).hexdigest()[:12]
    return download_once(f"variants-{key}", key, [("3.11", "\n".join(VARIANT_PINS) + "\n")],
                         log=log, platforms=VARIANT_PLATFORMS)


def build_wheel(directory: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """Write a minimal, valid pure-Python wheel; it carries one module that reports its origin."""
    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f'ORIGIN = "{name}"\n__version__ = "{version}"\n'.encode(),
        f"{dist}-{version}.dist-info/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {name}\nVersion: {version}\n"
            f"Summary: {name}, a package made by the pipfeed lab\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: pipfeed-lab\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n").encode(),
    }
    record_name = f"{dist}-{version}.dist-info/RECORD"
    record = io.StringIO()
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{path},sha256={digest},{len(data)}\n")
    record.write(f"{record_name},,\n")
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            # A fixed timestamp keeps the file, and so its hash, the same on every build.
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), data)
        archive.writestr(zipfile.ZipInfo(record_name, (2020, 1, 1, 0, 0, 0)), record.getvalue())
    return wheel


def populate(feed_dir: Path, other_dir: Path, log=sys.stderr) -> None:
    """Fill a lab's feed and second-index directories with copies, so that a test that alters a
    file on the feed never alters the cache."""
    wheels = ensure_wheels(log=log)
    feed_dir.mkdir(parents=True, exist_ok=True)
    for wheel in wheels.glob("*.whl"):
        shutil.copy2(wheel, feed_dir / wheel.name)
    build_wheel(feed_dir, *FEED_ONLY)
    build_wheel(other_dir, *OTHER_ONLY)
