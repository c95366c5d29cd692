"""The wheelhouse's choice of a file per pin (plugins/plugin_utils/wheel_choice.py): the target's
tag priority, the tie rule, and the choice from a real index page (cryptography 50.0.2 as PyPI
lists it, tests/unit/fixtures/), with no network. The priority list is the collection's own
code; these tests hold it to what pip's packaging computes, so that a change of either shows."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.files import plugin

pytestmark = pytest.mark.unit
choice = plugin("plugin_utils.wheel_choice")
PAGE = (Path(__file__).parent / "fixtures" / "simple-cryptography-50.0.2.html").read_text()
PAGE_URL = "https://pypi.org/simple/cryptography/"
PY39 = {"key": "cp39-glibc2.31-x86_64", "python": "3.9", "abi": "cp39", "arch": "x86_64",
        "glibc": "2.31", "implementation": "cpython"}
PY311 = dict(PY39, key="cp311-glibc2.36-x86_64", python="3.11", abi="cp311", glibc="2.36")
PY313 = dict(PY39, key="cp313-glibc2.41-x86_64", python="3.13", abi="cp313", glibc="2.41")
ARM313 = dict(PY313, key="cp313-glibc2.41-aarch64", arch="aarch64")
MANYLINUX_2_28 = "cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl"
MANYLINUX_2014 = "cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"


def page_files(names=None):
    files = choice.parse_simple_page(PAGE, PAGE_URL)
    return [f for f in files if names is None or f.filename in names]


# ----- the tag priority ------------------------------------------------------------------------
def test_manylinux_platforms_run_from_the_hosts_glibc_down_with_the_legacy_aliases():
    tags = choice.manylinux_platforms("2.31", "x86_64")
    assert tags[:2] == ["manylinux_2_31_x86_64", "manylinux_2_30_x86_64"]
    assert tags[tags.index("manylinux_2_17_x86_64") + 1] == "manylinux2014_x86_64"
    assert tags[tags.index("manylinux_2_12_x86_64") + 1] == "manylinux2010_x86_64"
    assert tags[-2:] == ["manylinux_2_5_x86_64", "manylinux1_x86_64"]
    assert "manylinux_2_32_x86_64" not in tags
    # Other architectures start at glibc 2.17 (manylinux2014), as pip's packaging has it.
    arm = choice.manylinux_platforms("2.41", "aarch64")
    assert arm[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    with pytest.raises(choice.ChoiceError, match="not a 2.x glibc"):
        choice.manylinux_platforms("3.1", "x86_64")


def test_target_tags_put_the_own_abi_first_then_abi3_then_pure_python():
    tags = choice.target_tags(PY313)
    assert tags[0] == "cp313-cp313-manylinux_2_41_x86_64"
    assert tags.index("cp313-cp313-linux_x86_64") < tags.index("cp313-abi3-manylinux_2_41_x86_64")
    assert tags.index("cp313-abi3-linux_x86_64") < tags.index("cp313-none-manylinux_2_41_x86_64")
    assert tags.index("cp313-none-linux_x86_64") < tags.index("cp312-abi3-manylinux_2_41_x86_64")
    # abi3 of an older minor: every platform of 3.12 before any of 3.11, down to cp32.
    assert tags.index("cp312-abi3-linux_x86_64") < tags.index("cp311-abi3-manylinux_2_41_x86_64")
    assert "cp32-abi3-manylinux1_x86_64" in tags and "cp31-abi3-manylinux1_x86_64" not in tags
    anywhere = tags[tags.index("cp313-none-any"):]
    assert anywhere[:5] == ["cp313-none-any", "py313-none-any", "py3-none-any", "py312-none-any",
                            "py311-none-any"]
    assert anywhere[-1] == "py30-none-any"
    assert len(tags) == len(set(tags))


def _packaging_order(packaging, platform, platforms):
    """What pip's packaging (the tags module of a given packaging) lists, for the platforms."""
    version = tuple(int(p) for p in platform["python"].split("."))
    interpreter = "cp" + platform["python"].replace(".", "")
    return [str(t) for t in (*packaging.cpython_tags(version, [platform["abi"]], platforms),
                             *packaging.compatible_tags(version, interpreter, platforms))]


@pytest.mark.parametrize("platform", [PY39, PY311, PY313, ARM313], ids=lambda p: p["key"])
def test_the_priority_is_the_order_of_pips_packaging_for_the_same_platforms(platform):
    """The controller's packaging and the one its pip vendors: the collection's list is the
    same, tag for tag. (The code never asks them: their order could change between releases.)"""
    from packaging import tags as controller_tags
    from pip._vendor.packaging import tags as pip_tags

    platforms = choice.manylinux_platforms(platform["glibc"], platform["arch"]) + [
        f"linux_{platform['arch']}"]
    ours = choice.target_tags(platform)
    assert ours == _packaging_order(controller_tags, platform, platforms)
    assert ours == _packaging_order(pip_tags, platform, platforms)


@pytest.mark.parametrize("glibc, arch", [("2.31", "x86_64"), ("2.41", "x86_64"),
                                         ("2.36", "aarch64")])
def test_the_manylinux_platforms_are_those_pips_packaging_lists_on_such_a_host(monkeypatch,
                                                                              glibc, arch):
    """packaging's own platform list, told that the glibc is the host's."""
    from packaging import _manylinux

    major, minor = (int(p) for p in glibc.split("."))
    _manylinux._get_glibc_version.cache_clear() if hasattr(
        _manylinux._get_glibc_version, "cache_clear") else None
    monkeypatch.setattr(_manylinux, "_get_glibc_version", lambda: (major, minor))
    monkeypatch.setattr(_manylinux, "_have_compatible_abi", lambda executable, archs: True)
    assert list(_manylinux.platform_tags([arch])) == choice.manylinux_platforms(glibc, arch)


# ----- file names and the page -----------------------------------------------------------------
def test_wheel_names_expand_compressed_tag_sets_and_read_build_tags():
    name = choice.parse_wheel_name(MANYLINUX_2014)
    assert (name.project, name.version, name.build) == ("cryptography", "50.0.2", ())
    assert name.tags == {"cp311-abi3-manylinux2014_x86_64", "cp311-abi3-manylinux_2_17_x86_64"}
    name = choice.parse_wheel_name("Foo.Bar-1.0-12b-py2.py3-none-any.whl")
    assert (name.project, name.build) == ("foo-bar", (12, "b"))
    assert name.tags == {"py2-none-any", "py3-none-any"}
    for bad in ("foo-1.0.tar.gz", "foo-1.0-py3-none.whl", "foo-1.0-x1-py3-none-any.whl",
                "../foo-1.0-py3-none-any.whl"):
        with pytest.raises(choice.ChoiceError):
            choice.parse_wheel_name(bad)


def test_versions_compare_as_pep_440_says():
    assert choice.same_version("1.0", "1.0.0") and choice.same_version("2.0.post1", "2.0-1")
    assert not choice.same_version("1.0", "1.0.1")
    assert choice.same_version("weird", "weird") and not choice.same_version("weird", "1.0")


def test_the_page_gives_every_file_its_url_sha256_and_requires_python():
    files = page_files()
    assert len(files) == 59
    first = files[0]
    assert first.filename == "cryptography-50.0.2-cp311-abi3-macosx_11_0_arm64.whl"
    assert first.url.startswith("https://files.pythonhosted.org/packages/")
    assert "#" not in first.url and first.url.endswith(first.filename)
    assert first.sha256 == "fa8f5efb344d6908a1ce62f4a24e2e5780f825d6f53f5f50ec5ffacac72936cb"
    assert first.requires_python == "!=3.9.0,!=3.9.1,>=3.9" and not first.yanked


def test_relative_links_a_base_and_yanked_files_are_read():
    text = ('<html><head><base href="/files/"></head><body>'
            '<a href="a-1.0-py3-none-any.whl#md5=00&amp;sha256=' + "A" * 64 + '">a</a>'
            '<a href="../x/a-1.1-py3-none-any.whl" data-yanked="">a</a>'
            '<a href="a-1.2.tar.gz#sha256=short" data-requires-python="&gt;=3.10">a</a>'
            "</body></html>")
    files = choice.parse_simple_page(text, "https://feed.example/simple/a/")
    assert [(f.filename, f.url, f.sha256, f.yanked) for f in files] == [
        ("a-1.0-py3-none-any.whl", "https://feed.example/files/a-1.0-py3-none-any.whl",
         "a" * 64, False),
        ("a-1.1-py3-none-any.whl", "https://feed.example/x/a-1.1-py3-none-any.whl", "", True),
        ("a-1.2.tar.gz", "https://feed.example/files/a-1.2.tar.gz", "", False)]
    assert files[2].requires_python == ">=3.10"


# ----- the choice ------------------------------------------------------------------------------
@pytest.mark.parametrize("platform, expected", [
    (PY311, "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl"),
    (PY313, "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl"),
    (dict(PY311, glibc="2.31"), MANYLINUX_2_28),
    (dict(PY311, glibc="2.27"), MANYLINUX_2014),
    (ARM313, "cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl"),
], ids=["cp311-glibc2.36", "cp313-glibc2.41", "glibc2.31", "glibc2.27", "aarch64"])
def test_the_choice_from_pypis_page_is_the_best_tag_for_the_target(platform, expected):
    assert choice.choose_wheel(page_files(), "cryptography", "50.0.2", platform).filename == \
        expected


def test_requires_python_is_read_as_pip_python_version_reads_it():
    """50.0.2 excludes 3.9.0 and 3.9.1, and a host that says "3.9" is 3.9.0 to pip too."""
    assert choice.choose_wheel(page_files(), "cryptography", "50.0.2", PY39) is None
    assert choice.choose_sdist(page_files(), "cryptography", "50.0.2", PY39) is None
    assert choice.python_admitted("", "3.9") and choice.python_admitted("not a spec", "3.9")
    assert choice.python_admitted(">=3.9", "3.9") and not choice.python_admitted(">=3.10", "3.9")


def test_the_choice_ignores_the_order_of_the_page():
    """The controller's own pip would take the first of equal candidates in the page's order."""
    files = page_files()
    wanted = choice.choose_wheel(files, "cryptography", "50.0.2", PY313)
    for seed in range(20):
        shuffled = list(files)
        random.Random(seed).shuffle(shuffled)
        assert choice.choose_wheel(shuffled, "cryptography", "50.0.2", PY313) == wanted


def test_the_issues_two_files_the_better_tag_wins_whatever_the_controller():
    """The two wheels two pips took for a cp313 host with glibc 2.41 (issue 18): with only
    these two on the index, manylinux_2_28 ranks above manylinux_2_17 / manylinux2014."""
    files = page_files({MANYLINUX_2_28, MANYLINUX_2014})
    for platform in (PY311, PY313):
        assert choice.choose_wheel(files, "cryptography", "50.0.2", platform).filename == \
            MANYLINUX_2_28
        ranks = choice.tag_ranks(platform)
        assert choice.rank(MANYLINUX_2_28, ranks) < choice.rank(MANYLINUX_2014, ranks)


def _file(name: str, yanked: bool = False):
    return choice.IndexFile(filename=name, url=f"https://feed.example/f/{name}", sha256="",
                            requires_python="", yanked=yanked)


def test_ties_go_to_the_highest_build_tag_then_the_smallest_file_name():
    tied = [_file("a-1.0-cp311-abi3-manylinux_2_17_x86_64.whl"),
            _file("a-1.0-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")]
    # Both rank at manylinux_2_17 (the alias comes after it): the smaller name wins.
    assert choice.choose_wheel(tied, "a", "1.0", PY311).filename == tied[1].filename
    assert choice.choose_wheel(tied[::-1], "a", "1.0", PY311).filename == tied[1].filename
    builds = [_file("a-1.0-py3-none-any.whl"), _file("a-1.0-2-py3-none-any.whl"),
              _file("a-1.0-10-py3-none-any.whl")]
    assert choice.choose_wheel(builds, "a", "1.0", PY311).filename == "a-1.0-10-py3-none-any.whl"


def test_a_yanked_file_comes_after_every_file_that_is_not():
    files = [_file("a-1.0-cp311-cp311-manylinux_2_36_x86_64.whl", yanked=True),
             _file("a-1.0-py3-none-any.whl")]
    assert choice.choose_wheel(files, "a", "1.0", PY311).filename == "a-1.0-py3-none-any.whl"
    assert choice.choose_wheel(files[:1], "a", "1.0", PY311).yanked


def test_names_and_versions_match_as_normalised_and_other_platforms_do_not_fit():
    files = [_file("Typing_Extensions-4.16-py3-none-any.whl"),
             _file("typing_extensions-4.16.0-cp313-cp313-win_amd64.whl"),
             _file("typing_extensions-4.17.0-py3-none-any.whl")]
    assert choice.choose_wheel(files, "typing-extensions", "4.16.0", PY313) == files[0]
    assert choice.choose_wheel(files[1:2], "typing-extensions", "4.16.0", PY313) is None


def test_an_sdist_is_chosen_only_as_the_releases_source_tar_gz_first():
    files = [_file("lab_x-1.0.zip"), _file("lab-x-1.0.tar.gz"), _file("lab_x-1.0.tar.gz"),
             _file("lab_x-1.1.tar.gz"), _file("lab_x-1.0-py3-none-any.whl")]
    assert choice.choose_sdist(files, "lab-x", "1.0", PY311).filename == "lab-x-1.0.tar.gz"
    assert choice.choose_sdist(files[:1], "lab-x", "1.0", PY311).filename == "lab_x-1.0.zip"
    assert choice.choose_sdist(files[3:], "lab-x", "1.0", PY311) is None


def test_the_choice_asks_no_tag_list_of_the_controllers_packaging_or_pip():
    """packaging.tags (and pip's copy) compute the running machine's tags, in an order their
    releases may change: the rule imports only packaging's versions and specifiers."""
    import ast

    tree = ast.parse(Path(choice.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert {m for m in imported if m.startswith(("packaging", "pip"))} == {
        "packaging.specifiers", "packaging.version"}
