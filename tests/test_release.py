"""Releases: what --from may name, and reusing installed dependencies file by file."""

import os
import shutil
import subprocess
import zipfile

import pytest

from appliance import REPO, build_release
from node.appliance import release
from node.appliance.release import ReleaseError


def test_only_a_silbato_wheel_is_taken(tmp_path):
    assert release.wheel_version(tmp_path / "silbato-1.2.3-py3-none-any.whl") == "1.2.3"
    for name in ("flask-3.0.0-py3-none-any.whl", "silbato-1.2.3.tar.gz"):
        with pytest.raises(ReleaseError, match="not a Silbato wheel"):
            release.wheel_version(tmp_path / name)
    with pytest.raises(ReleaseError, match="no such wheel"):
        release.build_wheel(str(tmp_path / "silbato-1.2.3-py3-none-any.whl"), tmp_path)
    with pytest.raises(ReleaseError, match="expected a wheel file, a source directory or a git URL"):
        release.build_wheel("nonsense", tmp_path)


def fake_dist(site, name, version, requires=(), files=()):
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    records = []
    for path in files:
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(f"# {path}\n")
        records.append(f"{path},,")
    records += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,", f"../../../bin/{name},,"]
    (info / "RECORD").write_text("\n".join(records) + "\n")


def test_the_closure_follows_requirements_extras_and_markers_and_names_what_is_missing(tmp_path):
    site = tmp_path / "site"
    fake_dist(site, "alpha", "1.0", ["beta>=2", 'gamma; extra == "fast"', 'delta; python_version < "3"'],
              ["alpha/__init__.py"])
    fake_dist(site, "beta", "2.5", [], ["beta.py"])
    fake_dist(site, "gamma", "1.0", [], ["gamma.py"])
    fake_dist(site, "pip", "25.0", [], ["pip/__init__.py"])
    dists, missing = release.dependency_closure(["alpha", "Beta>=2", "epsilon>=1", "beta>=3"], site)
    assert sorted(d.metadata["Name"] for d in dists) == ["alpha", "beta", "pip"]
    assert sorted(missing) == ["beta>=3", "epsilon>=1"]
    with_extra, _ = release.dependency_closure(["alpha[fast]"], site)
    assert "gamma" in {d.metadata["Name"] for d in with_extra}


def test_reused_files_are_hard_links_and_scripts_are_left_behind(tmp_path):
    site = tmp_path / "site"
    fake_dist(site, "beta", "2.5", [], ["beta.py"])
    dists, _ = release.dependency_closure(["beta"], site)
    target = tmp_path / "new"
    count = release.copy_distributions(dists, site, target)
    assert count == 3  # beta.py, METADATA, RECORD
    assert os.path.samefile(site / "beta.py", target / "beta.py")
    assert not (tmp_path / "bin").exists()


def test_a_source_tree_and_a_git_url_build_the_same_release(tmp_path):
    git = shutil.which("git")
    assert git, "git is needed to build from a git URL"
    wheel = build_release(tmp_path / "first", "99.1.0")
    src = tmp_path / "first" / "src-99.1.0"
    built = release.build_wheel(str(src), tmp_path / "from-dir")
    assert built.name == "silbato-99.1.0-py3-none-any.whl"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "release"],
                 ["tag", "v99.1.0"]):
        subprocess.run([git, *argv], cwd=src, check=True, env=env, capture_output=True)
    from_git = release.build_wheel(f"git+file://{src}@v99.1.0", tmp_path / "from-git")
    assert from_git.name == wheel.name
    with zipfile.ZipFile(from_git) as zf:
        names = zf.namelist()
    assert "silbato-99.1.0.data/data/share/silbato/systemd/silbato-node.service" in names
    assert "silbato-99.1.0.data/data/share/silbato/firmware_config/wifi/silbato-hotspot.nmconnection" in names


def test_the_checkout_carries_the_units_and_templates():
    share = release.share_dir()
    assert share == REPO
    assert (share / "systemd" / "silbato-node.service").is_file()
    assert (share / "firmware_config" / "wifi" / "silbato-dns.conf").is_file()
