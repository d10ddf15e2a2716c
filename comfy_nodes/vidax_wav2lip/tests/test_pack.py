"""Finding, checking and importing the ComfyUI_wav2lip pack (a fake one made of plain python)."""

import os
import sys
import types

import pytest

from vidax_wav2lip.core import pack
from vidax_wav2lip.core.errors import PackImportError, PackMissingError

from .conftest import fake_pack_files, write_tree


@pytest.fixture
def custom_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv(pack.ENV_PACK_DIR, raising=False)
    d = tmp_path / "custom_nodes"
    d.mkdir()
    return d


def test_missing_pack_names_the_folder_and_the_install_step(custom_nodes, monkeypatch):
    root = custom_nodes / "ComfyUI_wav2lip"
    with pytest.raises(PackMissingError) as e:
        pack.check_pack(str(root))
    msg = str(e.value)
    assert msg.startswith("VIDAX_PACK_MISSING:")
    assert str(root) in msg and "va install" in msg and "ShmuelRonen/ComfyUI_wav2lip" in msg
    assert e.value.missing == str(root)
    assert isinstance(e.value, FileNotFoundError)


def test_missing_code_file_is_named(custom_nodes):
    root = custom_nodes / "ComfyUI_wav2lip"
    files = fake_pack_files()
    del files["Wav2Lip/audio.py"]
    write_tree(str(root), files)
    with pytest.raises(PackMissingError, match="VIDAX_PACK_MISSING") as e:
        pack.check_pack(str(root))
    assert e.value.missing == os.path.join(str(root), "Wav2Lip", "audio.py")
    assert e.value.missing in str(e.value) and "va install" in str(e.value)


@pytest.mark.parametrize("asset,rel", [(a, r) for a, r, _ in pack.WEIGHTS])
def test_missing_weights_are_named_with_their_asset(custom_nodes, asset, rel):
    root = custom_nodes / "ComfyUI_wav2lip"
    files = fake_pack_files()
    del files[rel]
    write_tree(str(root), files)
    with pytest.raises(PackMissingError) as e:
        pack.check_pack(str(root))
    msg = str(e.value)
    assert msg.startswith("VIDAX_WEIGHTS_MISSING:")
    assert os.path.join(str(root), *rel.split("/")) in msg
    assert f"asset `{asset}`" in msg and "va install" in msg


def test_complete_pack_checks_out(custom_nodes):
    root = custom_nodes / "ComfyUI_wav2lip"
    write_tree(str(root), fake_pack_files())
    paths = pack.check_pack(str(root))
    assert paths.root == str(root)
    assert paths.checkpoint.endswith(os.path.join("checkpoints", "wav2lip_gan.pth"))
    assert paths.s3fd.endswith(os.path.join("sfd", "s3fd.pth"))


def test_candidates_env_then_comfy_folders_then_next_to_this_package(custom_nodes, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere" / "custom_nodes"
    stub = types.ModuleType("folder_paths")
    stub.get_folder_paths = lambda name: [str(other), str(custom_nodes)] if name == "custom_nodes" else []
    monkeypatch.setitem(sys.modules, "folder_paths", stub)
    cands = pack.candidate_dirs()
    assert cands[0] == str(other / "ComfyUI_wav2lip") and cands[1] == str(custom_nodes / "ComfyUI_wav2lip")
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pack.__file__))))
    assert cands[-1] == os.path.join(here, "ComfyUI_wav2lip")
    # The first existing one wins.
    write_tree(str(custom_nodes / "ComfyUI_wav2lip"), fake_pack_files())
    assert pack.find_pack_dir() == str(custom_nodes / "ComfyUI_wav2lip")
    monkeypatch.setenv(pack.ENV_PACK_DIR, str(tmp_path / "explicit"))
    assert pack.candidate_dirs()[0] == str(tmp_path / "explicit")


def test_import_through_sys_path(custom_nodes, clean_wav2lip_modules):
    root = custom_nodes / "ComfyUI_wav2lip"
    write_tree(str(root), fake_pack_files())
    mods = pack.import_pack(str(root))
    assert mods.models.Wav2Lip.FAKE is True
    assert mods.hparams.hparams.hop_size == 200
    for m in (mods.models, mods.audio, mods.hparams, mods.net_s3fd, mods.detect, mods.bbox):
        assert m.__file__.startswith(str(root / "Wav2Lip"))
    assert str(root) in sys.path
    # The pack's own __init__ (which would need torchaudio and the weights) was not run.
    assert not any(k.endswith("ComfyUI_wav2lip") for k in sys.modules)
    # Twice is fine (cached).
    assert pack.import_pack(str(root)).models is mods.models


def test_a_foreign_wav2lip_module_is_refused(custom_nodes, tmp_path, clean_wav2lip_modules):
    root = custom_nodes / "ComfyUI_wav2lip"
    write_tree(str(root), fake_pack_files())
    foreign = tmp_path / "other" / "Wav2Lip.py"
    write_tree(str(foreign.parent), {"Wav2Lip.py": "X = 1\n"})
    sys.modules["Wav2Lip"] = types.ModuleType("Wav2Lip")
    sys.modules["Wav2Lip"].__file__ = str(foreign)
    with pytest.raises(PackImportError) as e:
        pack.import_pack(str(root))
    msg = str(e.value)
    assert msg.startswith("VIDAX_PACK_CONFLICT:") and str(foreign) in msg


def test_a_foreign_wav2lip_earlier_on_sys_path_is_refused(custom_nodes, tmp_path, clean_wav2lip_modules):
    root = custom_nodes / "ComfyUI_wav2lip"
    write_tree(str(root), fake_pack_files())
    other = tmp_path / "site"
    write_tree(str(other), {"Wav2Lip/__init__.py": "", "Wav2Lip/models/__init__.py": "Wav2Lip = None\n"})
    sys.path.insert(0, str(other))
    sys.path.insert(0, str(root))
    # A regular package beats the pack's namespace folder whatever the order.
    with pytest.raises(PackImportError, match="VIDAX_PACK_CONFLICT"):
        pack.import_pack(str(root))


def test_a_broken_pack_dependency_is_reported(custom_nodes, clean_wav2lip_modules):
    root = custom_nodes / "ComfyUI_wav2lip"
    files = fake_pack_files()
    files["Wav2Lip/audio.py"] = "import librosa_that_is_not_installed\n"
    write_tree(str(root), files)
    with pytest.raises(PackImportError) as e:
        pack.import_pack(str(root))
    msg = str(e.value)
    assert msg.startswith("VIDAX_PACK_DEPENDENCY:")
    assert "librosa_that_is_not_installed" in msg and "va install" in msg
