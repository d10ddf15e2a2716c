"""The pipeline with the installed ComfyUI_wav2lip pack's real mel (librosa) and real network
(any weights of the right shapes), detector faked: runs where ``VIDAX_REAL_PACK_DIR`` names such
a pack (e.g. /work/comfy/ComfyUI/custom_nodes/ComfyUI_wav2lip), skipped elsewhere."""

import os

import numpy as np
import pytest

PACK_DIR = os.environ.get("VIDAX_REAL_PACK_DIR")
if not PACK_DIR:
    pytest.skip("VIDAX_REAL_PACK_DIR is not set", allow_module_level=True)
torch = pytest.importorskip("torch")
pytest.importorskip("librosa")

from vidax_wav2lip import nodes  # noqa: E402
from vidax_wav2lip.core import frames as fr  # noqa: E402
from vidax_wav2lip.core import lipsync, pack  # noqa: E402

from .conftest import FakeDetector, make_frames, tone  # noqa: E402
from .test_lipsync import render_chunks  # noqa: E402


@pytest.fixture(scope="module")
def runtime():
    """The real pack's runtime; afterwards its ``Wav2Lip`` modules and sys.path entry are removed
    again (the other tests import fake packs under that name)."""
    import sys

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    before_path = list(sys.path)
    before = {k for k in sys.modules if k == "Wav2Lip" or k.startswith("Wav2Lip.")}
    yield nodes.PackRuntime(pack.check_pack(PACK_DIR))
    for k in [k for k in sys.modules if (k == "Wav2Lip" or k.startswith("Wav2Lip.")) and k not in before]:
        del sys.modules[k]
    sys.path[:] = before_path


def test_real_mel_and_network_give_each_frame_the_same_pixels_in_any_chunking(runtime):
    fps, n = 25.0, 30
    # Loud to the very end, which falls inside frame 16's window (see test_lipsync).
    wav = (tone(16000, 2.0, 220.0, 0.6) + tone(16000, 2.0, 1370.0, 0.3))[: fr.samples_for_frames(16, fps)]
    frames = np.repeat(make_frames(1, h=120, w=100, seed=9), n, axis=0)
    kw = dict(detect=FakeDetector(box=(20, 20, 80, 90)), mel=runtime.mel, model=runtime.model)
    whole, rep = lipsync.lipsync_frames(frames, wav, fps, **kw)
    assert rep.synced > 15 and rep.outcome[20] == "synced"
    assert not np.array_equal(whole[0], frames[0])
    for cuts in ([17], [20, 21]):
        out, outcome, boxes = render_chunks(frames, wav, fps, cuts, **kw)
        assert outcome == rep.outcome and boxes == rep.boxes, cuts
        for k in range(n):
            assert np.array_equal(out[k], whole[k]), (cuts, k)
