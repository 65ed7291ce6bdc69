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

``python -m lnn_control.analysis.lane_attention models/lane.npz --seed 100000 --out out/lane_attention``
writes ``contact_sheet.png`` / ``contact_sheet_distractors.png`` (frames, VisualBackProp and
gradient overlays), ``saliency*.npz`` (the per-frame maps and labels) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import numpy as np

__all__ = ["LABELS", "attention_shares", "episode_saliency", "main", "visual_backprop"]

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


def episode_saliency(
    model: str | pathlib.Path, seed: int, distractors: int = 0, max_time: float | None = None
) -> dict[str, Any]:
    """One filtered closed-loop episode of the lane policy in ``model`` (episode ``seed``) and its
    per-frame maps: {"images" (T, H, W, 3) uint8, "labels" (T, H, W), "vbp", "grad" (T, H, W),
    "score": the episode's EpisodeScore}."""
    import torch

    from lnn_control.config import config_path
    from lnn_control.runtime.model_file import load_policy, load_stepper
    from lnn_control.sim import episodes as E
    from lnn_control.sim.lane import episode_track_seed
    from lnn_control.sim.rollout import ClosedLoop

    policy = load_policy(model).double()
    loop = ClosedLoop("lane", config_path("lane"), safety_filter=True)
    ts = episode_track_seed(seed)
    from lnn_control.sim.lane import LaneEnv

    env = LaneEnv(ts, distractors=distractors, seed=seed)
    loop._lane_envs[ts] = env  # this episode's scene (with its distractors); the loop picks it by track
    res = loop.run(load_stepper(model), seed, max_time=max_time, hold=0.0)
    obs, dt = res.episode.obs, res.episode.dt
    fields = E.GROUND_TRUTH_FIELDS["lane"]
    poses = res.ground_truth[:, [fields.index("x"), fields.index("y"), fields.index("theta")]]
    n = min(len(obs), len(poses))
    head, k0 = policy.head, policy.image_offset
    H, W, C = head.image_shape
    images, labels, vbp, grad = [], [], [], []
    h = None
    for t in range(n):
        env.state = poses[t].copy()
        env._sync()
        images.append(env.image())
        labels.append(env.pixel_labels())
        x = torch.as_tensor(obs[t][None, None]).clone().requires_grad_(True)
        y, h_new = policy(x, torch.tensor([[dt[t]]], dtype=torch.float64), h)
        (g,) = torch.autograd.grad(y[0, 0, 1], x)
        grad.append(g[0, 0, k0 : k0 + H * W * C].reshape(H, W, C).abs().sum(-1).numpy())
        vbp.append(visual_backprop(head, x.detach()[0, :, k0 : k0 + H * W * C].reshape(1, H, W, C)).numpy())
        h = h_new.detach()
    return {
        "images": np.stack(images),
        "labels": np.stack(labels),
        "vbp": np.stack(vbp),
        "grad": np.stack(grad),
        "score": res.score,
    }


def contact_sheet(ep: dict[str, Any], path: pathlib.Path, frames: int = 8, title: str = "") -> None:
    """Frames (top), VisualBackProp (middle) and input-gradient (bottom) overlays, evenly spaced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(ep["images"])
    idx = np.linspace(0, T - 1, frames).round().astype(int)
    fig, axes = plt.subplots(3, frames, figsize=(1.7 * frames, 4.4), dpi=110)
    for j, t in enumerate(idx):
        img = ep["images"][t]
        for r, (key, name) in enumerate(
            ((None, "camera"), ("vbp", "VisualBackProp"), ("grad", "|d omega / d pixel|"))
        ):
            ax = axes[r, j]
            ax.imshow(img if key is None else img.mean(-1), cmap=None if key is None else "gray")
            if key is not None:
                m = ep[key][t]
                ax.imshow(m / (m.max() + 1e-12), cmap="inferno", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 0:
                ax.set_title(f"t = {t * 0.05:.1f} s", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lnn_control.analysis.lane_attention",
        description="Saliency (VisualBackProp, input gradient) of a lane policy over an episode, clean "
        "and with distractors, and the share of it on the lane edges.",
    )
    p.add_argument("model", type=pathlib.Path)
    p.add_argument("--seed", type=int, default=100_000, help="episode seed (>= 100000: a held-out track)")
    p.add_argument("--episodes", type=int, default=3, help="episodes (seeds seed..seed+n-1) for the shares")
    p.add_argument("--distractors", type=int, default=12, help="boxes off the road in the second run")
    p.add_argument("--max-time", type=float, default=None, help="s of each episode (default a lap's limit)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/lane_attention"))
    a = p.parse_args(argv)
    if not a.model.is_file():
        print(f"error: {a.model}: no such model file", file=sys.stderr)
        return 2
    from lnn_control import strict_json

    a.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": str(a.model), "seeds": [a.seed, a.seed + a.episodes - 1]}
    for label, n_d in (("clean", 0), ("distractors", a.distractors)):
        shares: dict[str, list[dict[str, Any]]] = {"vbp": [], "grad": []}
        laps = 0
        for i in range(a.episodes):
            ep = episode_saliency(a.model, a.seed + i, n_d, a.max_time)
            laps += int(ep["score"].reached and not ep["score"].violated)
            for key in shares:
                shares[key].append(attention_shares(ep[key], ep["labels"]))
            if i == 0:
                name = "contact_sheet.png" if n_d == 0 else "contact_sheet_distractors.png"
                contact_sheet(ep, a.out / name, title=f"{a.model.name}, episode {a.seed}, {label}")
                np.savez_compressed(
                    a.out / f"saliency_{label}.npz",
                    images=ep["images"],
                    labels=ep["labels"],
                    vbp=ep["vbp"].astype(np.float32),
                    grad=ep["grad"].astype(np.float32),
                )
        summary[label] = {
            "distractors": n_d,
            "laps_without_departure": laps,
            "episodes": a.episodes,
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
    strict_json.write(a.out / "summary.json", summary)
    for label in ("clean", "distractors"):
        s = summary[label]
        print(
            f"{label}: laps {s['laps_without_departure']}/{s['episodes']}; edge share VBP "
            f"{s['vbp']['edges']['saliency_share']:.2f}, gradient {s['grad']['edges']['saliency_share']:.2f} "
            f"(edge pixels {s['vbp']['edges']['pixel_share']:.2f}); distractor share VBP "
            f"{s['vbp']['distractors']['saliency_share']:.3f}, gradient "
            f"{s['grad']['distractors']['saliency_share']:.3f} "
            f"(pixels {s['vbp']['distractors']['pixel_share']:.3f})"
        )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
