"""The install benchmark's arithmetic (bench/figures.py): the requirement set it loads, the
medians and ratios it prints, the feed requests it counts, its extrapolation, its targets."""
from __future__ import annotations

import pytest

from bench import figures
from bench.figures import BenchError, Extrapolation, Requests, Result
from bench.runner import REQUIREMENTS, SAMPLE, way_commands

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_benchmark_set_is_pinned_big_enough_and_compiled():
    pins = dict(figures.load_requirements(REQUIREMENTS))
    assert len(pins) >= 35
    for name in ("azure-identity", "azure-storage-blob", "cryptography", "numpy", "pandas",
                 "pydantic", "pydantic-core", "cffi"):
        assert name in pins, name
    # The sample timed with PyPI dropped is part of the set.
    assert set(SAMPLE) <= set(pins)


def test_requirements_are_normalized_and_comments_ignored(tmp_path):
    path = write(tmp_path, "# set\nPyYAML==6.0.3  # compiled\n\nTyping_Extensions==4.16.0\n")
    assert figures.load_requirements(path) == [("pyyaml", "6.0.3"),
                                               ("typing-extensions", "4.16.0")]


@pytest.mark.parametrize("line", ["numpy>=2", "numpy", "numpy==2.4.6 ; python_version < '3.12'",
                                  "-r other.txt", "numpy @ https://example.invalid/n.whl"])
def test_unpinned_line_is_named_with_its_number(tmp_path, line):
    path = write(tmp_path, f"idna==3.20\n{line}\n")
    with pytest.raises(BenchError, match=r"requirements.txt:2: .* not pinned as name==version"):
        figures.load_requirements(path)


def test_a_project_pinned_twice_is_refused(tmp_path):
    path = write(tmp_path, "idna==3.20\nIDNA==3.19\n")
    with pytest.raises(BenchError, match=r":2: idna is pinned again \(first on line 1\)"):
        figures.load_requirements(path)


def test_an_empty_set_is_refused(tmp_path):
    with pytest.raises(BenchError, match="no requirement"):
        figures.load_requirements(write(tmp_path, "# nothing\n"))


def test_cache_key_follows_the_set_and_the_platform(tmp_path):
    path = write(tmp_path, "idna==3.20\n")
    key = figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])
    assert key == figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])
    assert key != figures.set_key(path, "3.13", ["manylinux_2_28_x86_64"])
    assert key != figures.set_key(path, "3.11", ["any"])
    path.write_text("idna==3.19\n")
    assert key != figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])


def test_installed_venv_is_checked_against_every_pin():
    pins = [("pyyaml", "6.0.3"), ("numpy", "2.4.6"), ("idna", "3.20")]
    found = {"PyYAML": "6.0.3", "numpy": "2.4.5", "pip": "23.0.1"}
    assert figures.check_installed(pins, found) == ["numpy is 2.4.5, not 2.4.6",
                                                    "idna is not installed"]
    assert figures.check_installed(pins, {**found, "numpy": "2.4.6", "idna": "3.20"}) == []


def test_timing_line_gives_status_and_seconds():
    output = "Successfully installed x\npipfeed-bench rc=0 ns=12345000000\n"
    assert figures.parse_timing(output) == (0, 12.345)
    assert figures.parse_timing("pipfeed-bench rc=1 ns=5\n")[0] == 1
    with pytest.raises(BenchError, match="no timing line"):
        figures.parse_timing("Connection reset\n")


def test_feed_requests_are_counted_by_kind_with_blob_bytes():
    entries = [
        {"kind": "simple", "status": 200, "bytes": 900},
        {"kind": "download", "status": 303, "bytes": 0},
        {"kind": "blob", "status": 200, "bytes": 2_000_000},
        {"kind": "blob", "status": 200, "bytes": 500_000},
        {"kind": "other", "status": 404, "bytes": 10},
    ]
    counted = figures.count_requests(entries)
    assert (counted.index, counted.redirects, counted.blobs, counted.other) == (1, 1, 2, 1)
    assert counted.total == 5 and counted.blob_bytes == 2_500_000
    assert counted.describe() == "5 (1 index, 1 303, 2 blob, 1 other; 2.5 MB)"
    assert figures.count_requests([]).describe() == "0"


def test_median_of_runs():
    assert figures.median([3.0, 1.0, 2.0]) == 2.0
    assert figures.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(BenchError):
        figures.median([])


def test_extrapolation_adds_the_per_project_cost_to_the_base_way():
    guess = Extrapolation(sample=2, sample_seconds=200.0, sample_base_seconds=20.0, projects=43,
                          base_seconds=330.0, base_label="way 1, PyPI refused",
                          this_label="PyPI dropped")
    assert guess.extra_per_project == 90.0
    assert guess.seconds == 330.0 + 43 * 90.0
    assert "extrapolated, not measured" in guess.explain()
    assert "43 x 90.0 s = 4200 s (70.0 min)" in guess.explain()
    # A sample no slower than its base adds nothing (noise, not a negative cost).
    assert Extrapolation(1, 5.0, 6.0, 43, 30.0, "b", "t").seconds == 30.0


def result(key: str, *seconds: float, requests: int = 0) -> Result:
    made = Result(key, key, list(seconds))
    made.requests = [Requests(index=requests) for _ in seconds]
    return made


def test_targets_are_met_or_not_by_the_medians():
    results = {k: result(k, *v) for k, v in {
        "1r": (300.0, 310.0, 290.0), "2": (20.0, 21.0, 22.0), "3b": (10.0, 10.2, 9.8),
        "4": (10.5, 10.9, 10.4), "5c": (3.0,), "5w": (1.0,)}.items()}
    lines = "\n".join(figures.target_lines(results))
    assert "way 4 is 28.57x faster than way 1r  ->  met" in lines
    assert "way 4 is 2.00x faster than way 2  ->  met" in lines
    assert "way 4 is 1.05x slower than way 3b  ->  met" in lines
    assert "way 5w is 10.50x faster than way 4  ->  met" in lines
    assert "way 4 sends no request to the feed: most in a run 0  ->  met" in lines
    results["4"] = result("4", 12.0, 12.0, requests=3)
    lines = "\n".join(figures.target_lines(results))
    assert "way 4 is 1.20x slower than way 3b  ->  NOT MET" in lines
    assert "way 4 sends no request to the feed: most in a run 3  ->  NOT MET" in lines
    del results["5c"]
    assert "(uv, cold cache) at most a third of way 4: not run" in "\n".join(
        figures.target_lines(results))


def test_target_against_an_estimate_says_so():
    results = {"1r": result("1r", 300.0), "4": result("4", 10.0)}
    results["1r"].estimated = True
    assert "than way 1r (against an estimate)  ->  met" in "\n".join(
        figures.target_lines(results))


def test_table_prints_medians_runs_and_ratios_to_way_4():
    results = {"4": result("4", 10.0, 12.0, 11.0), "2": result("2", 22.0, 20.0, 21.0,
                                                                requests=129)}
    results["2"].note = "pip's cache never hits"
    lines = figures.table(results)
    assert lines[0].split()[:3] == ["way", "median", "x"]
    assert lines[1].split()[:5] == ["4", "11.0", "s", "1.00", "10.0,"]
    assert lines[2].split()[:4] == ["2", "21.0", "s", "1.91"]
    assert "129 (129 index, 0 303, 0 blob" in lines[2]
    assert lines[3].strip() == "pip's cache never hits"


def test_seed_ways_read_no_config_file_and_the_configured_way_is_the_plain_command():
    commands = way_commands("https://feed.example/simple/")
    for key in ("1r", "2", "3a", "3b"):
        assert "PIP_CONFIG_FILE=/dev/null" in commands[key], key
    assert "PIP_EXTRA_INDEX_URL=https://feed.example/simple/" in commands["1r"]
    assert "PIP_INDEX_URL=https://feed.example/simple/" in commands["2"]
    assert commands["4"].endswith("&& pip install --no-index -r requirements.txt")
    assert "PIP_" not in commands["4"]
    assert commands["5c"].endswith("uv pip install --offline -r requirements.txt")
    # The seeds' script, in its order: upgrade pip and wheel, pip wheel, pip install --no-index.
    script = commands["3a"]
    assert script.index("pip install pip wheel --upgrade") < script.index(
        "pip wheel --find-links=$PIP_CACHE_DIR --wheel-dir=$PIP_CACHE_DIR") < script.index(
        "pip install --find-links=$PIP_CACHE_DIR --no-index")


def test_benchmark_wheels_join_the_feed_without_replacing_its_files(tmp_path):
    from tests.lab.lab import Lab, LabError

    lab = Lab("benchunit")
    lab.dir = tmp_path / "lab"
    with pytest.raises(LabError, match="no feed package directory"):
        lab.add_feed_packages([])
    feed = lab.dir / "feed-packages"
    feed.mkdir(parents=True)
    (feed / "idna-3.20-py3-none-any.whl").write_bytes(b"the feed's own")
    source = tmp_path / "bench"
    source.mkdir()
    (source / "idna-3.20-py3-none-any.whl").write_bytes(b"another copy")
    (source / "mdurl-0.1.2-py3-none-any.whl").write_bytes(b"new")
    added = lab.add_feed_packages(sorted(source.iterdir()))
    assert added == ["mdurl-0.1.2-py3-none-any.whl"]
    assert (feed / "idna-3.20-py3-none-any.whl").read_bytes() == b"the feed's own"
    assert (feed / "mdurl-0.1.2-py3-none-any.whl").read_bytes() == b"new"
    assert sorted(p.name for p in feed.iterdir()) == ["idna-3.20-py3-none-any.whl",
                                                      "mdurl-0.1.2-py3-none-any.whl"]


def test_wheel_files_name_their_projects_once():
    assert figures.projects_of(["pip-26.3-py3-none-any.whl", "wheel-0.48.0-py3-none-any.whl",
                                "Typing_Extensions-4.16.0-py3-none-any.whl",
                                "pip-26.3-py3-none-any.whl", ""]) == [
        "pip", "typing-extensions", "wheel"]


def test_quick_is_one_run_of_everything_and_runs_must_be_positive(capsys):
    from bench.runner import parse_args

    args = parse_args(["--quick", "--runs", "5"])
    assert (args.runs, args.slow_runs, args.quick) == (1, 1, True)
    assert (parse_args([]).runs, parse_args([]).slow_runs) == (3, 2)
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])
    assert "--runs and --slow-runs must be 1 or more" in capsys.readouterr().err
