"""Shortcut distillation: the objective's targets, its reduction to flow matching, and a tiny distillation."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from vidmill.model.dit import DiT, pack, unpack
from vidmill.model.sizes import get_size
from vidmill.training.data.sample import LatentSample
from vidmill.training.objectives.shortcut import ShortcutConfig, ShortcutObjective

CFG = get_size("tiny").dit
HW = (2, 2)


def hand_t(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u >= 1, torch.full_like(u, 0.9999), u**2 / (3 - 2 * u**2)).float()


def perturbed(seed: int) -> DiT:
    torch.manual_seed(seed)
    model = DiT(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def samples(n: int, chunks: int = 2, seed: int = 0, captioned: bool = False) -> list[LatentSample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        caps = [torch.randn(3, CFG.text_dim, generator=g) if captioned else None for _ in range(chunks)]
        out.append(LatentSample(f"s{i}", torch.randn(CFG.latent_channels, chunks * CFG.chunk_frames, *HW,
                                                     generator=g), caps))
    return out


def hand_flow_matching(model, batch, noised, step_size):
    """mean over noisy-chunk tokens of |model(x_t) - (x1 - x0)|^2, written out directly."""
    frames = CFG.chunk_frames
    xs, ts = [], []
    for x0, x1, u in zip(noised.x0, noised.x1, noised.u, strict=True):
        t = hand_t(u)
        tf = t.repeat_interleave(frames).view(1, -1, 1, 1)
        xs.append((1 - tf) * x0 + tf * x1)
        ts.append(t)
    captions = [[None if float(u[j]) >= 1 else c for j, c in enumerate(s.captions)]  # clean context: null text
                for s, u in zip(batch, noised.u, strict=True)]
    p = pack(xs, ts, captions, CFG)
    groups = sum(len(u) for u in noised.u)
    step = None if step_size is None else torch.full((groups,), step_size)
    pred = unpack(model(p, window=4, step_size=step), p, CFG)
    errors = []
    for y, x0, x1, u in zip(pred, noised.x0, noised.x1, noised.u, strict=True):
        noisy = (u < 1).repeat_interleave(frames)
        errors.append(((y - (x1 - x0))[:, noisy] ** 2).mean(dim=0).flatten())
    return torch.cat(errors).mean()


def test_smallest_step_is_exactly_flow_matching():
    model, batch = perturbed(0), samples(6, captioned=True)
    objective = ShortcutObjective(ShortcutConfig(step_sizes=(1 / 64,), bootstrap_fraction=1.0, seed=3),
                                  ema=perturbed(1))
    loss, metrics = objective.loss(model, batch)
    assert metrics["bootstrap_samples"] == 0  # d at the smallest step: no self-consistency target
    replay = ShortcutObjective(ShortcutConfig(step_sizes=(1 / 64,), bootstrap_fraction=1.0, seed=3), ema=model)
    replay.choose_bootstrap(len(batch))
    noised = replay.noise(batch, [True] * len(batch))
    torch.testing.assert_close(loss, hand_flow_matching(model, batch, noised, 1 / 64), rtol=1e-5, atol=1e-6)
    # a base model (step embedding still zero) sees no difference between d_min and no step conditioning
    base = DiT(CFG)
    loss_base, _ = ShortcutObjective(ShortcutConfig(step_sizes=(1 / 64,), bootstrap_fraction=1.0, seed=3),
                                     ema=base).loss(base, batch)
    torch.testing.assert_close(loss_base, hand_flow_matching(base, batch, noised, None), rtol=1e-5, atol=1e-6)


def test_guidance_with_unit_weights_is_flow_matching_and_otherwise_not():
    model, teacher, batch = perturbed(0), perturbed(2), samples(4, captioned=True)

    def run(**kw):
        cfg = ShortcutConfig(bootstrap_fraction=0.0, seed=5, tail_prob=1.0, **kw)
        return ShortcutObjective(cfg, ema=model, teacher=teacher).loss(model, batch)[0]

    plain = run()
    torch.testing.assert_close(run(guidance=True, w_prev=1.0, w_text=1.0, guidance_until=2.0), plain)
    assert abs(float(run(guidance=True, w_prev=1.5, w_text=7.5, guidance_until=1.0).detach() - plain.detach())) > 1e-3
    with pytest.raises(ValueError, match="teacher"):
        ShortcutObjective(ShortcutConfig(guidance=True), ema=model)


def test_bootstrap_target_is_two_half_steps_of_the_ema_model():
    model, ema, batch = perturbed(0), perturbed(1), samples(1, chunks=1)
    d = 1 / 8
    cfg = ShortcutConfig(step_sizes=(1 / 64, d), bootstrap_fraction=1.0, seed=7, target_clip=100.0)
    objective = ShortcutObjective(cfg, ema=ema)
    objective.bootstrap_count = 1  # the next bootstrap sample takes d = 1/8
    loss, metrics = objective.loss(model, batch, bootstrap=[True])
    assert metrics["bootstrap_samples"] == 1

    replay = ShortcutObjective(cfg, ema=ema)
    replay.bootstrap_count = 1
    noised = replay.noise(batch, [True])
    u, x0, x1 = noised.u[0], noised.x0[0], noised.x1[0]
    assert noised.d == [d] and float(u[0]) in (0.0, 0.125)
    t0, t1, t2 = hand_t(u), hand_t(u + d / 2), hand_t(u + d)
    x_t = (1 - t0) * x0 + t0 * x1

    def velocity(net, x, t, step):
        p = pack([x], [t], [[None]], CFG)
        return unpack(net(p, window=4, step_size=torch.tensor([step])), p, CFG)[0]

    with torch.no_grad():
        v1 = velocity(ema, x_t, t0, d / 2)
        v2 = velocity(ema, x_t + (t1 - t0) * v1, t1, d / 2)
    target = ((t1 - t0) * v1 + (t2 - t1) * v2) / (t2 - t0)
    expected = F.mse_loss(velocity(model, x_t, t0, d), target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # targets are clipped
    clipped = ShortcutObjective(ShortcutConfig(step_sizes=(1 / 64, d), bootstrap_fraction=1.0, seed=7,
                                               target_clip=1e-3), ema=ema)
    clipped.bootstrap_count = 1
    small, _ = clipped.loss(model, batch, bootstrap=[True])
    pred = velocity(model, x_t, t0, d)
    torch.testing.assert_close(small, F.mse_loss(pred, target.clamp(-1e-3, 1e-3)), rtol=1e-5, atol=1e-6)


def test_step_sizes_cycle_and_fraction_and_resume():
    objective = ShortcutObjective(ShortcutConfig(bootstrap_fraction=1 / 8), ema=DiT(CFG))
    noised = objective.noise(samples(8), [True] * 8)
    assert noised.d == [1 / 64, 1 / 32, 1 / 16, 1 / 8] * 2  # MAGI's 64, 32, 16, 8 steps, in turn
    assert objective.noise(samples(2), [False, False]).d == [1 / 64, 1 / 64]  # the rest: the smallest step
    for u, d in zip(noised.u, noised.d, strict=True):  # noise levels on the d-grid, older chunks cleaner
        assert torch.allclose(torch.round(u / d) * d, u) and u[0] >= u[1]
    picks = [sum(objective.choose_bootstrap(16)) for _ in range(400)]
    assert abs(sum(picks) / (400 * 16) - 1 / 8) < 0.02
    model, batch = perturbed(0), samples(4)
    state = json.loads(json.dumps(objective.state_dict()))  # JSON, as the trainer saves it
    first, _ = objective.loss(model, batch, 7, torch.Generator().manual_seed(9))  # the trainer's step rng
    objective.load_state_dict(state)
    again, _ = objective.loss(model, batch, 7, torch.Generator().manual_seed(9))
    torch.testing.assert_close(first, again)


# -- a tiny distillation: teacher trained briefly by flow matching on a two-mode toy set, then distilled ------

def toy_batch(n: int, gen: torch.Generator, patterns: torch.Tensor) -> list[LatentSample]:
    """Static two-chunk clips of one of two patterns (a curved flow: two modes), a little noise."""
    out = []
    for i in range(n):
        k = int(torch.randint(2, (), generator=gen))
        frames = 2 * CFG.chunk_frames
        latent = patterns[k].expand(-1, frames, -1, -1) + 0.1 * torch.randn(CFG.latent_channels, frames, *HW,
                                                                             generator=gen)
        out.append(LatentSample(f"s{i}", latent, [None, None]))
    return out


def fit(model, objective, steps, lr, patterns, ema=None, decay=0.5):
    """The test's stand-in for the trainer's loop: AdamW with cosine decay, EMA of the trained parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        loss, _ = objective.loss(model, toy_batch(16, gen, patterns), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.step_embed.parameters(), model.step_embed.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)


def sample(model, steps, distilled, seeds=range(8)):
    from vidmill.training.sampler import ChunkSampler, SamplerConfig

    out = []
    for seed in seeds:
        sampler = ChunkSampler(model, SamplerConfig(steps=steps, guidance=False, step_conditioning=distilled))
        out.append(torch.cat(list(sampler.generate(3, HW, generator=torch.Generator().manual_seed(seed))), 1))
    return torch.stack(out)


def distilled_student(teacher, patterns, bootstrap_fraction):
    """Student and EMA start from the teacher; only the step-size embedder trains (no drift of the rest)."""
    student, ema = copy.deepcopy(teacher).train(), copy.deepcopy(teacher).eval()
    student.requires_grad_(False)
    student.step_embed.requires_grad_(True)
    objective = ShortcutObjective(ShortcutConfig(bootstrap_fraction=bootstrap_fraction), ema=ema)
    fit(student, objective, 150, 2e-3, patterns, ema=ema)
    return student.eval()


def test_distilled_8_steps_are_closer_to_the_teachers_64_steps_than_the_teacher_at_8():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions: the comparison below is one fixed run
    try:
        torch.manual_seed(0)
        patterns = torch.randn(2, CFG.latent_channels, 1, *HW, generator=torch.Generator().manual_seed(0))
        teacher = DiT(CFG)
        plain = ShortcutObjective(ShortcutConfig(bootstrap_fraction=0.0, step_conditioning=False), ema=teacher)
        fit(teacher, plain, 300, 3e-3, patterns)
        teacher.eval()
        reference = sample(teacher, 64, distilled=False)
        teacher_8 = float((sample(teacher, 8, distilled=False) - reference).pow(2).mean())
        student_8 = float((sample(distilled_student(teacher, patterns, 0.5), 8, True) - reference).pow(2).mean())
        # control: the same training with flow matching only (no self-consistency targets)
        control_8 = float((sample(distilled_student(teacher, patterns, 0.0), 8, True) - reference).pow(2).mean())
    finally:
        torch.set_num_threads(threads)
    print(f"latent MSE to the teacher's 64 steps: teacher 8 steps {teacher_8:.5f}, distilled 8 steps "
          f"{student_8:.5f}, flow-matching-only control {control_8:.5f}")
    assert student_8 < 0.8 * teacher_8
    assert student_8 < control_8
