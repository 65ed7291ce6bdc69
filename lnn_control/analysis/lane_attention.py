"""Where the camera policy looks: per-frame saliency of a lane policy and the share of it on the
lane's edges (issue 14 item 5).

For one closed-loop episode of ``models/lane.npz`` (the deployed step, :class:`ClosedLoop`, filter
on) every frame the policy saw is re-rendered from the recorded pose (the ray-cast camera is
deterministic without noise) with its per-pixel labels (:meth:`LaneEnv.pixel_labels`: sky,
grass, road, edge line, centre line, distractor), and the torch policy is stepped along the same
observations (its hidden state carried) to give two saliency maps per frame:

* input gradient: |d omega_t / d pixel| of the steering command at frame t, hidden state fixed;
* VisualBackProp (Bojarski et al. 2016): the channel-mean of each conv layer's ReLU output,
  from the last layer back: scale up to the previous layer's size (transposed convolution with
  a kernel of ones, that layer's kernel and stride) and multiply with its mean map, down to
  the input size.

Attention share (per map, per frame, then the mean over frames): the saliency mass on a class
of pixels over the total, beside that class's share of the pixels (chance level). The edge-line
mask is widened by one pixel (8-neighbourhood): a 4 cm line is 1-2 pixels wide at 64x48.
With ``distractors`` seeded boxes stand on the grass off the road (:func:`distractor_boxes`).

Any lane model: the project's model file (``models/lane.npz``, conv+NCP) or the comparison's
baselines saved by :mod:`lnn_control.analysis.lane_compare` (conv+LSTM, feed-forward CNN; the
input gradient works for any torch model, VisualBackProp on their shared conv head).

``python -m lnn_control.analysis.lane_attention models/lane.npz --seed 100000 --out out/lane_attention``
writes ``contact_sheet.png`` / ``contact_sheet_distractors.png`` (frames, VisualBackProp and
gradient overlays), ``saliency*.npz`` (the per-frame maps and labels) and ``summary.json``.
With several models (``... models/lane.npz models/lane_compare/conv_lstm.npz ...``): one folder
per model, ``summary.json`` of all, and ``compare_sheet*.png``: every model's maps on the first
model's frames (the same observations stepped through each model, its hidden state carried).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import numpy as np

__all__ = [
    "LABELS",
    "attention_shares",
    "episode_saliency",
    "load_lane_model",
    "main",
    "saliency_maps",
    "visual_backprop",
]

#: pixel classes of :meth:`lnn_control.sim.lane.LaneEnv.pixel_labels`
LABELS = ("sky", "grass", "road", "edge", "centre", "distractor", "other")


def visual_backprop(head: Any, image: Any) -> Any:
    """VisualBackProp map (H, W) >= 0 of a :class:`~lnn_control.nn.vision.ConvHead` for one image
    (1, H, W, C) tensor in the head's pixel units (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        z = image.to(head.map_weight.dtype).permute(0, 3, 1, 2) * head.pixel_scale + head.pixel_offset
        means, sizes = [], [tuple(z.shape[2:])]
        for conv in head.convs:
            z = torch.relu(conv(z))
            means.append(z.mean(1, keepdim=True))
            sizes.append(tuple(z.shape[2:]))
        v = means[-1]
        for i in range(len(head.convs) - 1, -1, -1):
            conv = head.convs[i]
            k, s = conv.kernel_size[0], conv.stride[0]
            h_in, w_in = sizes[i]
            pad = ((h_in - k) % s, (w_in - k) % s)
            ones = torch.ones(1, 1, k, k, dtype=v.dtype)
            v = F.conv_transpose2d(v, ones, stride=s, output_padding=pad)
            if i > 0:
                v = v * means[i - 1]
        return v[0, 0]


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    p = np.pad(mask, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= p[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
    return out


def attention_shares(saliency: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean over frames of the saliency share and the pixel share of: ``edges`` (edge lines, one
    pixel wider), ``road`` (road surface and its markings), ``off_road`` (grass, sky,
    distractors) and ``distractors``. saliency, labels: (T, H, W)."""
    sal = np.abs(np.asarray(saliency, dtype=np.float64))
    masks = {
        "edges": np.stack([_dilate(lab == 3) for lab in labels]),
        "road": np.isin(labels, (2, 3, 4)),
        "off_road": np.isin(labels, (0, 1, 5)),
        "distractors": labels == 5,
    }
    tot = sal.reshape(len(sal), -1).sum(1)
    ok = tot > 0
    out = {}
    for name, m in masks.items():
        share = (sal * m).reshape(len(sal), -1).sum(1)[ok] / tot[ok]
        out[name] = {
            "saliency_share": float(share.mean()) if share.size else float("nan"),
            "pixel_share": float(m.reshape(len(m), -1).mean(1).mean()),
        }
    return out


def load_lane_model(path: str | pathlib.Path) -> tuple[Any, Any]:
    """(torch policy in float64, closed-loop stepper) of a lane model file: the project's model
    file (conv+NCP, ``models/lane.npz``; the torch-free stepper) or a comparison baseline saved by
    :func:`lnn_control.analysis.lane_compare.save_models` (conv+LSTM / feed-forward CNN; a torch
    stepper)."""
    import json

    from lnn_control.runtime.model_file import load_policy, load_stepper

    with np.load(path, allow_pickle=False) as z:
        cfg = json.loads(str(z["__config__"])) if "__config__" in z.files else {}
    if "core" in cfg:
        from lnn_control.analysis.lane_compare import load_baseline

        base = load_baseline(path)
        return base, base.runtime()
    return load_policy(path).double(), load_stepper(path)


def saliency_maps(policy: Any, obs: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VisualBackProp and input-gradient maps (T, H, W) of ``policy`` (a torch lane policy with a
    conv ``head`` and ``image_offset``: VisionPolicy or ConvBaseline) stepped along observations
    (T, n_inputs) with periods (T,) s, its hidden state carried (module docstring)."""
    import torch

    head, k0 = policy.head, policy.image_offset
    H, W, C = head.image_shape
    vbp, grad = [], []
    h = None
    for t in range(len(obs)):
        x = torch.as_tensor(np.asarray(obs[t], dtype=np.float64)[None, None]).clone().requires_grad_(True)
        y, h_new = policy(x, torch.tensor([[float(dt[t])]], dtype=torch.float64), h)
        (g,) = torch.autograd.grad(y[0, 0, 1], x)
        grad.append(g[0, 0, k0 : k0 + H * W * C].reshape(H, W, C).abs().sum(-1).numpy())
        vbp.append(visual_backprop(head, x.detach()[0, :, k0 : k0 + H * W * C].reshape(1, H, W, C)).numpy())
        h = h_new.detach()
    return np.stack(vbp), np.stack(grad)


def episode_saliency(
    model: Any, seed: int, distractors: int = 0, max_time: float | None = None
) -> dict[str, Any]:
    """One filtered closed-loop episode of a lane policy (episode ``seed``) and its per-frame maps.

    ``model``: a model-file path (:func:`load_lane_model`) or a (torch policy, stepper) pair.
    Returns {"images" (T, H, W, 3) uint8, "labels" (T, H, W), "vbp", "grad" (T, H, W), "obs"
    (T, n_inputs), "dt" (T,), "score": the episode's EpisodeScore}."""
    from lnn_control.config import config_path
    from lnn_control.sim import episodes as E
    from lnn_control.sim.lane import LaneEnv, episode_track_seed
    from lnn_control.sim.rollout import ClosedLoop

    policy, stepper = model if isinstance(model, tuple) else load_lane_model(model)
    loop = ClosedLoop("lane", config_path("lane"), safety_filter=True)
    ts = episode_track_seed(seed)
    env = LaneEnv(ts, distractors=distractors, seed=seed)
    loop._lane_envs[ts] = env  # this episode's scene (with its distractors); the loop picks it by track
    res = loop.run(stepper, seed, max_time=max_time, hold=0.0)
    obs, dt = res.episode.obs, res.episode.dt
    fields = E.GROUND_TRUTH_FIELDS["lane"]
    poses = res.ground_truth[:, [fields.index("x"), fields.index("y"), fields.index("theta")]]
    n = min(len(obs), len(poses))
    images, labels = [], []
    for t in range(n):
        env.state = poses[t].copy()
        env._sync()
        images.append(env.image())
        labels.append(env.pixel_labels())
    vbp, grad = saliency_maps(policy, np.asarray(obs[:n]), np.asarray(dt[:n]))
    return {
        "images": np.stack(images),
        "labels": np.stack(labels),
        "vbp": vbp,
        "grad": grad,
        "obs": np.asarray(obs[:n]),
        "dt": np.asarray(dt[:n]),
        "score": res.score,
    }


def save_png(fig: Any, path: pathlib.Path) -> None:
    """``fig`` as a 256-colour PNG (a third of the size of matplotlib's; Pillow ships with it)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)


def contact_sheet(ep: dict[str, Any], path: pathlib.Path, frames: int = 8, title: str = "") -> None:
    """Frames (top), VisualBackProp (middle) and input-gradient (bottom) overlays, evenly spaced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(ep["images"])
    idx = np.linspace(0, T - 1, frames).round().astype(int)
    fig, axes = plt.subplots(3, frames, figsize=(1.7 * frames, 4.4), dpi=80)
    for j, t in enumerate(idx):
        img = ep["images"][t]
        for r, (key, name) in enumerate(
            ((None, "camera"), ("vbp", "VisualBackProp"), ("grad", "|d omega / d pixel|"))
        ):
            _cell(axes[r, j], img, None if key is None else ep[key][t], name if j == 0 else None,
                  f"t = {t * 0.05:.1f} s" if r == 0 else None, 7)  # fmt: skip
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def _cell(
    ax: Any, img: np.ndarray, m: np.ndarray | None, ylabel: str | None, title: str | None, size: int
) -> None:
    """One frame of a contact sheet: the camera image, or its grey version under the saliency ``m``."""
    ax.imshow(img if m is None else img.mean(-1), cmap=None if m is None else "gray")
    if m is not None:
        ax.imshow(m / (m.max() + 1e-12), cmap="inferno", alpha=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=size)
    if title is not None:
        ax.set_title(title, fontsize=size)


def compare_sheet(
    images: np.ndarray, maps: dict[str, tuple[np.ndarray, np.ndarray]], path: pathlib.Path, frames: int = 6,
    title: str = "",
) -> None:  # fmt: skip
    """The same frames (top row) with each model's VisualBackProp and input-gradient overlays
    (two rows per model): ``maps`` {name: (vbp (T, H, W), grad (T, H, W))} along ``images``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(images)
    idx = np.linspace(0, T - 1, frames).round().astype(int)
    rows: list[tuple[str | None, str, int]] = [(None, "camera", 0)] + [
        (name, f"{name}\n{label}", k) for name in maps for k, label in ((0, "VBP"), (1, "gradient"))
    ]
    fig, axes = plt.subplots(len(rows), frames, figsize=(1.35 * frames, 1.05 * len(rows)), dpi=80)
    for j, t in enumerate(idx):
        img = images[t]
        for r, (name, label, k) in enumerate(rows):
            _cell(axes[r, j], img, None if name is None else maps[name][k][t], label if j == 0 else None,
                  f"t = {t * 0.05:.1f} s" if r == 0 else None, 6)  # fmt: skip
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def model_summary(
    model: pathlib.Path, seed: int, episodes: int, distractors: int, max_time: float | None,
    out: pathlib.Path | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:  # fmt: skip
    """Attention shares of one model over ``episodes`` held-out episodes, clean and with
    ``distractors`` boxes; (summary, {"clean" | "distractors": the first episode's maps}). With
    ``out``: its contact sheets and per-frame maps there."""
    loaded = load_lane_model(model)
    summary: dict[str, Any] = {"model": str(model), "seeds": [seed, seed + episodes - 1]}
    first: dict[str, dict[str, Any]] = {}
    for label, n_d in (("clean", 0), ("distractors", distractors)):
        shares: dict[str, list[dict[str, Any]]] = {"vbp": [], "grad": []}
        laps = 0
        for i in range(episodes):
            ep = episode_saliency(loaded, seed + i, n_d, max_time)
            laps += int(ep["score"].reached and not ep["score"].violated)
            for key in shares:
                shares[key].append(attention_shares(ep[key], ep["labels"]))
            if i == 0:
                first[label] = ep
                if out is not None:
                    name = "contact_sheet.png" if n_d == 0 else "contact_sheet_distractors.png"
                    contact_sheet(ep, out / name, title=f"{model.name}, episode {seed}, {label}")
                    np.savez_compressed(
                        out / f"saliency_{label}.npz",
                        images=ep["images"],
                        labels=ep["labels"],
                        vbp=ep["vbp"].astype(np.float32),
                        grad=ep["grad"].astype(np.float32),
                    )
        summary[label] = {
            "distractors": n_d,
            "laps_without_departure": laps,
            "episodes": episodes,
            **{
                key: {
                    cls: {
                        m: float(np.mean([s[cls][m] for s in per_ep]))
                        for m in ("saliency_share", "pixel_share")
                    }
                    for cls in per_ep[0]
                }
                for key, per_ep in shares.items()
            },
        }
    return summary, first


def _say(name: str, summary: dict[str, Any]) -> None:
    for label in ("clean", "distractors"):
        s = summary[label]
        print(
            f"{name} {label}: laps {s['laps_without_departure']}/{s['episodes']}; edge share VBP "
            f"{s['vbp']['edges']['saliency_share']:.2f}, gradient {s['grad']['edges']['saliency_share']:.2f} "
            f"(edge pixels {s['vbp']['edges']['pixel_share']:.2f}); distractor share VBP "
            f"{s['vbp']['distractors']['saliency_share']:.3f}, gradient "
            f"{s['grad']['distractors']['saliency_share']:.3f} "
            f"(pixels {s['vbp']['distractors']['pixel_share']:.3f})",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lnn_control.analysis.lane_attention",
        description="Saliency (VisualBackProp, input gradient) of lane policies over episodes, clean "
        "and with distractors, and the share of it on the lane edges. Several models: one folder each "
        "under --out, a summary of all and side-by-side sheets of the first model's frames.",
    )
    p.add_argument(
        "model", type=pathlib.Path, nargs="+", help="model files (models/lane.npz, lane_compare's)"
    )
    p.add_argument("--seed", type=int, default=100_000, help="episode seed (>= 100000: a held-out track)")
    p.add_argument("--episodes", type=int, default=3, help="episodes (seeds seed..seed+n-1) for the shares")
    p.add_argument("--distractors", type=int, default=12, help="boxes off the road in the second run")
    p.add_argument("--max-time", type=float, default=None, help="s of each episode (default a lap's limit)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/lane_attention"))
    a = p.parse_args(argv)
    for m in a.model:
        if not m.is_file():
            print(f"error: {m}: no such model file", file=sys.stderr)
            return 2
    if a.seed < 100_000 or a.episodes < 1:
        print("error: --seed must be >= 100000 (held-out tracks) and --episodes >= 1", file=sys.stderr)
        return 2
    from lnn_control import strict_json

    a.out.mkdir(parents=True, exist_ok=True)
    if len(a.model) == 1:
        summary, _ = model_summary(a.model[0], a.seed, a.episodes, a.distractors, a.max_time, a.out)
        strict_json.write(a.out / "summary.json", summary)
        _say(a.model[0].name, summary)
        print(f"wrote {a.out}")
        return 0
    names = [m.stem if m.stem not in ("lane",) else "shipped_" + m.stem for m in a.model]
    if len(set(names)) != len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    every: dict[str, Any] = {"seeds": [a.seed, a.seed + a.episodes - 1], "models": {}}
    firsts = {}
    for name, m in zip(names, a.model):
        (a.out / name).mkdir(exist_ok=True)
        summary, firsts[name] = model_summary(m, a.seed, a.episodes, a.distractors, a.max_time, a.out / name)
        every["models"][name] = summary
        strict_json.write(a.out / "summary.json", every)
        _say(name, summary)
    for label in ("clean", "distractors"):  # every model's maps on the first model's frames
        ref = firsts[names[0]][label]
        maps = {names[0]: (ref["vbp"], ref["grad"])}
        for name, m in zip(names[1:], a.model[1:]):
            maps[name] = saliency_maps(load_lane_model(m)[0], ref["obs"], ref["dt"])
        sheet = a.out / ("compare_sheet.png" if label == "clean" else "compare_sheet_distractors.png")
        compare_sheet(
            ref["images"], maps, sheet, title=f"{names[0]}'s episode {a.seed} ({label}), every model's maps"
        )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
