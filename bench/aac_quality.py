#!/usr/bin/env python3
"""How far AAC's coders are from the source (docs/PERFORMANCE.md, "AAC coder").

    bench/aac_quality.py SOURCE.wav [BITRATE]       (needs the ffmpeg CLI and numpy)

Encodes SOURCE (e.g. the speech `va bench` generates, or a recording) with FFmpeg's native AAC
encoder at BITRATE (default 192k) once per coder (twoloop, the default; fast), decodes
each back (the MP4 edit list removes the priming, so samples line up) and prints, per coder:
CPU seconds of the encode, and against the source: SNR, segmental SNR (20 ms frames above
-50 dBFS), log-spectral distance (dB, 2048-point Hann frames, 50 Hz - 16 kHz, frames above
-50 dBFS), and the spectral distance between the coder and twoloop's decode.
"""
import os, resource, subprocess, sys, tempfile
import numpy as np

src, rate = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "192k")
tmp = tempfile.mkdtemp()

def ff(*a):
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *a], check=True)

def pcm(path):
    out = os.path.join(tmp, "x.f32")
    ff("-i", path, "-ac", "2", "-f", "f32le", "-acodec", "pcm_f32le", out)
    return np.fromfile(out, dtype="<f4").reshape(-1, 2).mean(axis=1)

def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

ref = pcm(src)
fs = 48000
def frames(x, n, hop):
    k = (len(x) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(k)[:, None]
    return x[idx]

def spectra(x):
    f = frames(x, 2048, 1024) * np.hanning(2048)
    return np.abs(np.fft.rfft(f, axis=1)) ** 2

band = slice(int(50 * 2048 / fs), int(16000 * 2048 / fs))
S_ref = spectra(ref)
loud = 10 * np.log10(S_ref.sum(axis=1) / (2048 * 0.375 * 1024) + 1e-20) > -50 + 10 * np.log10(0.5)

def lsd(A, B, mask):
    d = 10 * np.log10((A[:, band] + 1e-12) / (B[:, band] + 1e-12))
    return float(np.sqrt((d[mask] ** 2).mean(axis=1)).mean())

results, decoded = {}, {}
for coder in ["twoloop", "fast"]:
    out = os.path.join(tmp, f"{coder}.m4a")
    t0 = cpu()
    ff("-i", src, "-c:a", "aac", "-aac_coder", coder, "-b:a", rate, out)
    secs = cpu() - t0
    y = pcm(out)
    n = min(len(y), len(ref))
    x, y = ref[:n], y[:n]
    e = y - x
    snr = 10 * np.log10((x ** 2).sum() / (e ** 2).sum())
    fx, fe = frames(x, 960, 960), frames(e, 960, 960)
    px = (fx ** 2).mean(axis=1)
    m = px > 10 ** (-5)
    seg = float(np.mean(10 * np.log10(px[m] / ((fe[m] ** 2).mean(axis=1) + 1e-20))))
    S = spectra(y)
    k = min(len(S), len(S_ref))
    decoded[coder] = S[:k]
    results[coder] = dict(cpu_s=round(secs, 2), snr_db=round(float(snr), 2), segsnr_db=round(seg, 2),
                          lsd_db=round(lsd(S[:k], S_ref[:k], loud[:k]), 3),
                          bytes=os.path.getsize(out))
for coder in results:
    k = min(len(decoded[coder]), len(decoded["twoloop"]))
    results[coder]["lsd_vs_twoloop_db"] = round(lsd(decoded[coder][:k], decoded["twoloop"][:k], loud[:k]), 3)
print(f"source {src}, {len(ref) / fs:.1f} s, {rate}")
for coder, r in results.items():
    print(f"  {coder:8s} " + "  ".join(f"{k} {v}" for k, v in r.items()))
