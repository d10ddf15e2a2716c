"""The package loads the way ComfyUI loads a custom node, and matches docs/COMFYUI_INTERFACE.md.

ComfyUI (nodes.py ``load_custom_node``) imports a custom-node folder with
``spec_from_file_location(<path with '.' -> '_x_'>, <folder>/__init__.py)``, registers the module
in ``sys.modules`` under that path-like name *before* executing it, and never puts the folder on
``sys.path``. The check runs in a fresh interpreter (``python -c``) with stub ``folder_paths`` and
``comfy`` modules, and with torch, scipy, soundfile and the pack's ``Wav2Lip`` blocked: loading
the package must need none of them.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from vidax_wav2lip import nodes

from .conftest import COMFY_NODES_DIR, INTERFACE_DOC, PACKAGE_DIR

EXPECTED = {
    "VIDAX_Wav2Lip",
    "VIDAX_LoadAudio",
    "VIDAX_FaceProbe",
    "VIDAX_MotionChunk",
    "VIDAX_MouthBlend",
    "VIDAX_SavePatches",
}

LOADER = r"""
import importlib.util, json, os, sys, types

module_path = sys.argv[1]
custom_nodes = os.path.dirname(module_path)
drop = {os.path.abspath(custom_nodes), os.path.abspath(module_path), os.path.abspath(os.getcwd())}
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) not in drop]

BLOCKED = {"torch", "torchaudio", "torchcodec", "scipy", "soundfile", "librosa", "cv2", "Wav2Lip", "av"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for the import test: " + name)
        return None
sys.meta_path.insert(0, Block())

folder_paths = types.ModuleType("folder_paths")
folder_paths.get_input_directory = lambda: "/nonexistent/input"
folder_paths.get_folder_paths = lambda name: [custom_nodes] if name == "custom_nodes" else []
folder_paths.get_annotated_filepath = lambda name: os.path.join("/nonexistent/input", name)
sys.modules["folder_paths"] = folder_paths
comfy = types.ModuleType("comfy")
comfy.__path__ = []
for sub in ("model_management", "utils"):
    m = types.ModuleType("comfy." + sub)
    setattr(comfy, sub, m)
    sys.modules["comfy." + sub] = m
sys.modules["comfy"] = comfy

# nodes.py load_custom_node, for a folder:
sys_module_name = module_path.replace(".", "_x_")
module_spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
module = importlib.util.module_from_spec(module_spec)
sys.modules[sys_module_name] = module
module_spec.loader.exec_module(module)

info = {}
for name, cls in module.NODE_CLASS_MAPPINGS.items():
    fn = getattr(cls, "FUNCTION")
    assert callable(getattr(cls(), fn)), (name, fn)
    # What /object_info serialises (server.py node_info).
    info[name] = {
        "input": cls.INPUT_TYPES(),
        "output": list(cls.RETURN_TYPES),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "category": cls.CATEGORY,
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": cls.__module__,
    }
print(json.dumps({
    "display": module.NODE_DISPLAY_NAME_MAPPINGS,
    "info": info,
    "loaded": sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED or k.startswith("Wav2Lip")),
}))
"""


def load_like_comfyui(module_path):
    r = subprocess.run(
        [sys.executable, "-c", LOADER, module_path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(module_path),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def check_loaded(res):
    assert set(res["info"]) == EXPECTED
    assert set(res["display"]) == EXPECTED
    assert all(isinstance(v, str) and v for v in res["display"].values())
    assert res["loaded"] == []  # no torch, scipy, soundfile, pack
    for name, info in res["info"].items():
        assert "required" in info["input"], name
        assert info["category"] == "vidax"
        assert len(info["output"]) == len(info["output_name"]) == len(info["output_is_list"])
        for section in info["input"].values():
            for inp, spec in section.items():
                assert isinstance(spec, list) and 1 <= len(spec) <= 2, (name, inp)
                assert isinstance(spec[0], (str, list)), (name, inp)
    assert res["info"]["VIDAX_Wav2Lip"]["output"] == ["IMAGE", "VIDAX_LIPSYNC_REPORT"]
    assert res["info"]["VIDAX_Wav2Lip"]["output_name"] == ["images", "report"]
    assert res["info"]["VIDAX_FaceProbe"]["output_node"] is True
    assert res["info"]["VIDAX_MouthBlend"]["input"]["optional"] == {"lipsync_report": ["VIDAX_LIPSYNC_REPORT"]}
    assert res["info"]["VIDAX_LoadAudio"]["output"] == ["AUDIO"]
    save = res["info"]["VIDAX_SavePatches"]
    assert save["output_node"] is True and save["output"] == []
    assert list(save["input"]["required"]) == ["images", "reference", "filename_prefix"]


def test_loads_in_place_like_comfyui():
    check_loaded(load_like_comfyui(PACKAGE_DIR))


def test_loads_when_copied_into_a_custom_nodes_folder(tmp_path):
    # va install copies the folder; a dotted path exercises ComfyUI's '.' -> '_x_' module name.
    target = tmp_path / "ComfyUI.v0.3" / "custom_nodes" / "vidax_wav2lip"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    check_loaded(load_like_comfyui(str(target)))


def test_wav2lip_inputs_are_the_issues():
    spec = nodes.VIDAX_Wav2Lip.INPUT_TYPES()
    req = spec["required"]
    assert list(req) == ["images", "audio", "fps", "mode", "face_detect_batch", "on_no_face"]
    assert req["fps"][0] == "FLOAT"
    assert req["mode"][0] == ["sequential", "repetitive"] and req["mode"][1]["default"] == "sequential"
    assert req["face_detect_batch"][1]["default"] == 8
    assert req["on_no_face"][0] == ["passthrough", "error"] and req["on_no_face"][1]["default"] == "passthrough"


# ---- docs/COMFYUI_INTERFACE.md agrees with the code ----


def doc_text():
    if not os.path.isfile(INTERFACE_DOC):
        pytest.skip(f"{INTERFACE_DOC} not found (package copied out of the repository)")
    with open(INTERFACE_DOC, encoding="utf-8") as fh:
        return fh.read()


def sections(text):
    parts = re.split(r"^## ", text, flags=re.M)
    out = {}
    for p in parts[1:]:
        title, _, body = p.partition("\n")
        m = re.fullmatch(r"`(VIDAX_\w+)`", title.strip())
        if m:
            out[m.group(1)] = body
    return out


def table(body, header_start):
    rows, inside = [], False
    for line in body.splitlines():
        if line.startswith("| " + header_start):
            inside = True
            continue
        if inside:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            rows.append(cells)
    return rows


def code(cell):
    return re.findall(r"`([^`]*)`", cell)


def test_doc_lists_every_node_with_its_display_name_and_outputs():
    text = doc_text()
    top = table(text, "class_type")
    assert {code(r[0])[0] for r in top} == EXPECTED
    for r in top:
        name = code(r[0])[0]
        assert r[1] == nodes.NODE_DISPLAY_NAME_MAPPINGS[name]
        types = []
        for part in [] if r[2] == "none" else r[2].split(","):
            m = re.match(r"\s*(?:(\d+) × )?`(\w+)`", part)
            types += [m.group(2)] * int(m.group(1) or 1)
        assert tuple(types) == nodes.NODE_CLASS_MAPPINGS[name].RETURN_TYPES, name
    assert set(sections(text)) == EXPECTED


def _doc_value(cell, kind):
    c = code(cell)
    if not c:
        return None
    v = c[0]
    if kind == "BOOLEAN":
        return v == "true"
    if kind == "STRING":
        return json.loads(v)
    if kind in ("INT", "FLOAT"):
        return float(v)
    return v


def test_doc_inputs_match_input_types():
    secs = sections(doc_text())
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        rows = table(secs[name], "input")
        spec = cls.INPUT_TYPES()
        code_inputs = [(sec, inp, s) for sec in ("required", "optional") for inp, s in spec.get(sec, {}).items()]
        assert [code(r[0])[0] for r in rows] == [i for _, i, _ in code_inputs], name
        for r, (sec, inp, s) in zip(rows, code_inputs):
            where = f"{name}.{inp}"
            assert r[1] == sec, where
            opts = s[1] if len(s) > 1 else {}
            if isinstance(s[0], list):
                assert r[2] == "choice", where
                assert code(r[4]) == s[0], where
                assert _doc_value(r[3], "choice") == opts.get("default"), where
                continue
            assert code(r[2]) == [s[0]], where
            if "default" in opts:
                assert _doc_value(r[3], s[0]) == opts["default"], where
            else:
                assert r[3] == "", where
            if s[0] in ("INT", "FLOAT"):
                m = re.fullmatch(r"(-?[\d.]+) to (-?[\d.]+)", r[4])
                assert m, where
                assert float(m.group(1)) == opts["min"] and float(m.group(2)) == opts["max"], where


def test_doc_outputs_match_return_names():
    secs = sections(doc_text())
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        body = secs[name]
        if not cls.RETURN_TYPES:
            assert cls.OUTPUT_NODE is True, name
            assert re.search(r"^Outputs: none", body, flags=re.M), name
        elif len(cls.RETURN_TYPES) == 1:
            m = re.search(r"Output 0: `(\w+)` \(`(\w+)`\)", body)
            assert m, name
            assert (m.group(1), m.group(2)) == (cls.RETURN_NAMES[0], cls.RETURN_TYPES[0]), name
        else:
            rows = table(body, "index")
            assert [int(r[0]) for r in rows] == list(range(len(cls.RETURN_TYPES)))
            assert [code(r[1])[0] for r in rows] == list(cls.RETURN_NAMES)
            assert [code(r[2])[0] for r in rows] == list(cls.RETURN_TYPES)


def test_comfy_nodes_has_no_init_of_its_own():
    # ComfyUI gets the package folder itself; comfy_nodes/ is only the repository's container.
    assert not os.path.exists(os.path.join(COMFY_NODES_DIR, "__init__.py"))
