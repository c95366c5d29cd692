"""The lab's own building blocks, without Docker: image recipes, certificates, wheels."""
from __future__ import annotations

import dataclasses
import ssl
import subprocess
import sys
import zipfile

import pytest
from cryptography import x509

from tests.lab import images, packages, pki
from tests.lab.lab import Lab, LabError

pytestmark = pytest.mark.unit


def test_image_tag_changes_when_recipe_changes():
    recipe = images.RECIPES["deb12"]
    changed = dataclasses.replace(recipe, packages=recipe.packages + ("curl",))
    assert recipe.tag != changed.tag
    assert recipe.tag == images.Recipe("deb12", "bookworm", "3.11").tag


def test_each_lab_distro_has_its_python():
    assert {r.suite: r.python for r in images.RECIPES.values()} == {
        "bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}


def test_server_certificate_chains_to_lab_ca_for_every_name(tmp_path):
    paths = pki.make(tmp_path, ["feed.lab.test", "blob.lab.test"], ["172.30.0.1"])
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["feed.lab.test", "blob.lab.test"]
    assert oct(paths["key"].stat().st_mode & 0o777) == "0o600"
    # A real TLS client context accepts the pair when it trusts the CA.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["cert"], paths["key"])
    client = ssl.create_default_context(cafile=str(paths["ca"]))
    assert client.cert_store_stats()["x509_ca"] == 1


def test_built_wheel_installs_with_real_pip(tmp_path):
    wheel = packages.build_wheel(tmp_path / "dist", "lab-feedonly", "1.0.0")
    again = packages.build_wheel(tmp_path / "again", "lab-feedonly", "1.0.0")
    assert wheel.read_bytes() == again.read_bytes(), "same input must give the same file"
    with zipfile.ZipFile(wheel) as archive:
        assert "lab_feedonly-1.0.0.dist-info/RECORD" in archive.namelist()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-deps", "--target", str(target), str(wheel)], check=True,
                   env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"})
    out = subprocess.run([sys.executable, "-c", "import lab_feedonly; print(lab_feedonly.ORIGIN)"],
                         cwd=target, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lab-feedonly"


@pytest.mark.parametrize("python", packages.PYTHONS)
def test_package_set_pins_each_project_once_per_target_python(python):
    pins = packages.requirements_for(python)
    names = [pin.split("==")[0] for pin in pins]
    assert len(names) == len(set(names)) >= 25
    assert all("==" in pin and ";" not in pin for pin in pins)


def test_package_set_markers_follow_the_target_not_the_controller():
    assert "numpy==2.0.2" in packages.requirements_for("3.9")
    assert "numpy==2.0.2" not in packages.requirements_for("3.13")


def test_package_set_key_depends_on_the_pythons():
    assert packages.set_key(("3.9",)) != packages.set_key(("3.9", "3.11"))


@pytest.mark.parametrize("name", ["", "Demo", "1lab", "a-b", "abcdefghijk"])
def test_lab_names_that_docker_or_iptables_would_mangle_are_refused(name):
    with pytest.raises(LabError, match="lab name"):
        Lab(name)


def test_loading_a_missing_lab_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.lab.lab.STATE_ROOT", tmp_path)
    with pytest.raises(LabError, match="no lab named 'nolab'"):
        Lab.load("nolab")
