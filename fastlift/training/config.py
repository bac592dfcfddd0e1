"""The one training configuration: a flat dataclass that CLI flags and TOML/YAML files map onto.

Every field has a default (the ``fast`` preset, tuned to learn a useful lifter on a 2-core CPU in
minutes); presets (:data:`PRESETS`) override a subset of fields; a config file overrides the
preset; CLI flags override the file. The resolved config is written with every run
(``config.toml`` and ``config.json``). Unknown keys are errors that name the key and suggest the
closest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields

__all__ = ["TrainConfig", "PRESETS", "ConfigError", "load_config_file", "apply_overrides", "resolve_config",
           "config_to_toml", "STRUCTURAL_FIELDS", "structural_diff"]


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, bad value, incompatible checkpoint."""


def _f(default, help: str, choices=None):
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """All knobs of a training run (``docs/training.md`` explains each group)."""

    # ---------------------------------------------------------------- run
    mode: str = _f("unsupervised", "unsupervised (the method) or supervised (same lifter trained on 3D labels: the upper reference)",
                   ("unsupervised", "supervised"))
    preset: str = _f("fast", "preset the other defaults come from (fast, paper, paper-literal, tiny)")
    data: typing.Optional[str] = _f(None, "training 2D pose file (any format fastlift.data.load_poses reads); None: embedded synthetic data")
    val: typing.Optional[str] = _f(None, "3D-labelled validation file; None: the synthetic val split when data is synthetic, else none")
    test: typing.Optional[str] = _f(None, "3D-labelled test file scored at the end; None: the synthetic test split when data is synthetic")
    out: typing.Optional[str] = _f(None, "run directory; None: runs/<timestamp>")
    extra_2d: typing.Optional[str] = _f(None, "extra 2D poses without 3D (another dataset or a detector's output, any layout load_poses reads), mapped into the training layout by the 2D domain adapter and added to the training data (docs/adapter.md)")
    extra_layout: typing.Optional[str] = _f(None, "layout of the extra_2d poses when the file does not name it (coco17, openpose25, ...)")
    extra_adapt: bool = _f(True, "train the 2D domain adapter on extra_2d (false: only convert its layout)")
    adapter_steps: int = _f(1000, "updates of the 2D domain adapter (about a minute on one CPU thread)")
    extra_target_fraction: float = _f(0.5, "with extra_2d, the training poses are repeated to at least this fraction of the mix")
    synthetic_seed: int = _f(0, "seed of the embedded synthetic data splits")
    layout: str = _f("h36m17", "skeleton layout the lifter works in")
    seed: int = _f(0, "seed of initialisation, data order, dropout and rotations")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    threads: int = _f(1, "torch CPU threads (0: torch's default, all cores). 1 by default: on a shared 2-core machine two OpenMP threads ran 4-9x slower than one")
    steps: int = _f(3000, "number of optimisation steps (lifter updates)")
    max_minutes: float = _f(9.3, "wall-clock budget of the training loop in minutes (0: none); the run stops cleanly, checkpoints and tests. 9.3: a default run took 569 s in all (9.5 minutes) on the 2-core VM")
    batch_size: int = _f(256, "poses per step per process")
    val_every: int = _f(250, "validate every K steps (0: once per epoch)")
    val_samples: int = _f(4096, "validation poses used during training (0: all); the final test uses all")
    log_every: int = _f(50, "steps between metric rows in metrics.csv / TensorBoard")
    ckpt_every: int = _f(1000, "steps between checkpoints (0: only at the end)")
    ckpt_minutes: float = _f(2.0, "also checkpoint when this many minutes passed since the last one (0: off)")
    progress: bool = _f(True, "tqdm progress bar")
    tensorboard: bool = _f(True, "write TensorBoard events when tensorboard is installed")
    plots: bool = _f(True, "draw curves.png and val_samples.png into the run directory at the end (needs matplotlib)")
    resume: typing.Optional[str] = _f(None, "checkpoint (or run directory) to continue exactly")
    init: typing.Optional[str] = _f(None, "checkpoint whose model weights initialise this run (no optimizer state); its network sizes must match, its mode need not (a supervised lifter can start an unsupervised run)")
    refine_bones: str = _f("auto", "the final test also scores the lifts refined to one skeleton per person (fastlift.evaluation.refine): auto (per subject when the test data names subjects, else per sequence), subject, sequence, none",
                           ("auto", "subject", "sequence", "none"))
    min_poses: int = _f(64, "refuse training data with fewer valid poses than this")

    # ---------------------------------------------------------------- lifter
    width: int = _f(256, "lifter hidden width (paper 1024)")
    blocks: int = _f(2, "lifter residual blocks (paper 4)")
    batch_norm: bool = _f(True, "lifter BatchNorm")
    dropout: float = _f(0.0, "lifter dropout (paper 0.5; 0 trains better unsupervised)")
    activation: str = _f("relu", "lifter activation", ("relu", "leaky_relu", "gelu", "silu"))
    out_init_scale: float = _f(0.01, "initial scale of the lifter's depth head, zero bias (1: PyTorch default)")
    standardize_inputs: bool = _f(True, "z-score the lifter's inputs per dimension with training-set statistics")

    # ---------------------------------------------------------------- geometry
    c: float = _f(10.0, "depth constant: root depth of the lift and after rotation; 2D head-root distance is 1/c")
    depth_floor: str = _f("soft", "lift depth floor: soft (min_depth + softplus(c+d)) or hard (max(0,c+d)+min_depth)", ("soft", "hard"))
    projection_floor: str = _f("soft", "projection depth floor: soft (fused op) or hard (clamp)", ("soft", "hard"))
    min_depth: float = _f(1.0, "depth floor of lift and projection")
    azimuth_range: typing.List[float] = _f([-180.0, 180.0], "azimuth range of the random rotation, degrees")
    elevation_range: typing.List[float] = _f([-20.0, 20.0], "elevation range of the random rotation, degrees")
    rotation_warmup: int = _f(0, "steps over which the azimuth and elevation ranges widen linearly from rotation_warmup_start times their size to their full size, shrunk toward 0 (the input's own view): early fakes are near-real views (0: off; needs the uniform distribution)")
    rotation_warmup_start: float = _f(0.25, "rotation_warmup: fraction of the ranges at step 0")
    adv_level_views: bool = _f(False, "the discriminators judge each lift from the step's azimuth without its elevation offset (views at the input's own elevation, like the data's), while L_2D and L_3D keep the full rotation; with the same azimuth both see the same side of the pose (needs the uniform distribution)")
    elevation_anneal: int = _f(0, "steps over which the elevation range shrinks linearly to 0 (views at the input's own elevation), from step elevation_anneal_start (0: off; needs the uniform distribution)")
    elevation_anneal_start: int = _f(0, "elevation_anneal: step at which the elevation range starts to shrink")
    rotation_distribution: str = _f("uniform", "uniform (azimuth/elevation ranges) or haar (uniform on SO(3))", ("uniform", "haar"))
    rotation_axis: str = _f("estimated", "axis of the random azimuth: camera (the camera's y axis, the method) or estimated (the world vertical, from the mean torso tilt of the batch's lifts; elevation offsets then apply about the estimated camera elevation)", ("camera", "estimated"))
    renorm_floor: float = _f(0.35, "the rotated lifts are re-normalised to a head-root distance of 1/c from a projected head-root distance of at least renorm_floor / c: a lift whose torso turns toward the camera in the random view is drawn smaller instead of blown up (without it the default's fakes reached 1.4-1.8 in normalised units, the real poses of the same batches 0.4-1.0). 0: no floor (the paper presets)")
    normalization: str = _f("per_sample", "2D normalisation of the training data", ("per_sample", "dataset"))

    # ---------------------------------------------------------------- losses and ablations
    use_discriminator: bool = _f(True, "ablation switch: False trains without D (consistency only)")
    use_l2d: bool = _f(True, "ablation switch: the 2D cycle loss L_2D")
    use_l3d: bool = _f(True, "ablation switch: the 3D cycle loss L_3D")
    use_temporal: bool = _f(True, "ablation switch: the temporal discriminator (needs sequences)")
    w_adv: float = _f(1.0, "weight of the adversarial loss (paper 1)")
    w_2d: float = _f(10.0, "weight of L_2D (paper 10)")
    w_3d: float = _f(30.0, "weight of L_3D (paper 0.001; per-element means, see docs/training.md)")
    w_temporal: float = _f(1.0, "weight of the temporal adversarial loss (paper 1)")
    w_bone_sym: float = _f(0.0, "weight of the left/right bone-length symmetry cue on the lift")
    w_depth_extent: float = _f(0.0, "weight of the depth-extent cue on the lift: squared excess of a joint's depth offset from the root over depth_extent_margin times the pose's image-plane radius (0: off)")
    depth_extent_margin: float = _f(1.0, "depth offset, in units of the pose's image-plane radius, beyond which the depth-extent cue applies")
    w_bone_temporal: float = _f(0.0, "weight of the bone-length constancy cue between frames t and t-k")
    w_bone_sequence: float = _f(1000.0, "weight of the bone-length constancy cue (log length ratios, scale removed) between each pose and bone_sequence_partners random frames of the same person (bone_sequence_group; any distance): one person's bones keep their lengths however the limbs turn, so a limb foreshortened in one frame is measured in another (needs sequences or subjects; 0: off; 1000 measured best of 100, 300, 1000, 3000, see docs/training.md)")
    bone_sequence_partners: int = _f(2, "frames of the same person (subject or sequence, bone_sequence_group) each pose is compared with by the w_bone_sequence cue (each costs a lift of the batch)")
    bone_sequence_group: str = _f("subject", "where the w_bone_sequence cue's partner frames come from: 'subject' (any sequence of the same person: other cameras, other motions; the subject names must name persons) or 'sequence' (the pose's own sequence); 'subject' falls back to 'sequence' when the data has no subject names", ("sequence", "subject"))
    bone_sequence_start: int = _f(500, "step at which the w_bone_sequence cue switches on (it then rises linearly to its weight over bone_sequence_ramp steps)")
    bone_sequence_ramp: int = _f(250, "steps over which the w_bone_sequence cue rises from 0 to its weight, from bone_sequence_start")
    w_knee_hinge: float = _f(0.0, "weight of the knee-hinge cue on the lift: sin(flexion) times how far the knee's axis (thigh x shin) turns beyond knee_hinge_margin from the hip axis made perpendicular to the thigh (0: off)")
    knee_hinge_margin: float = _f(45.0, "knee-hinge cue: degrees the knee's axis may turn from the hip axis (the hip's internal/external rotation) before the cue applies")
    knee_hinge_start: int = _f(0, "step at which the knee-hinge cue switches on")
    cycle_views: int = _f(1, "random rotations per pose in the cycle losses L_2D and L_3D (the discriminators see the first): more consistency constraints per step for the cost of re-lifts only. 4 locked in the wrong depth sign from the start on the synthetic data (docs/training.md), so the default is 1")
    l3d_target: str = _f("lift", "what L_3D's gradient reaches: 'lift' both the rotated lift and the re-lift (the paper's consistency), 'detached' the re-lift only (the rotated lift is a fixed target that the re-lift regresses onto)", ("lift", "detached"))
    consistency: str = _f("mse", "per-element loss of L_2D / L_3D", ("mse", "l1", "huber"))
    consistency_warmup: int = _f(0, "steps over which w_2d and w_3d ramp up linearly from 0")
    w_3d_final: float = _f(0.0, "weight L_3D rises to, linearly from w_3d, over the w_3d_ramp steps from w_3d_ramp_start (0: w_3d throughout). 30 -> 100 over 1000 steps collapsed one of two seeds on the synthetic data (docs/training.md), so it is off by default")
    w_3d_ramp: int = _f(1000, "steps over which the L_3D weight moves from w_3d to w_3d_final")
    w_3d_ramp_start: int = _f(0, "step at which the L_3D weight starts to move from w_3d to w_3d_final (the early phase, where strong L_3D weights collapsed, keeps w_3d)")
    flip_augment: bool = _f(True, "mirror a random half of each batch (x -> -x with left/right joints swapped: a valid pose of the mirrored world)")
    use_confidence: bool = _f(True, "weight L_2D per joint by the 2D confidence")
    gan_loss: str = _f("bce", "GAN loss", ("bce", "lsgan", "wgan-gp"))
    gp_weight: float = _f(10.0, "gradient-penalty weight (wgan-gp)")
    label_smoothing: float = _f(0.0, "one-sided label smoothing of D's real targets (bce, lsgan)")
    d_steps: int = _f(2, "discriminator updates per generator step")
    d_bend_negatives: float = _f(0.0, "weight of real poses with one knee or elbow bent the other way in 2D (the end joint reflected across the upper limb) as extra fakes for D (0: off)")
    d_warmup: int = _f(0, "first steps in which only the discriminators train (the lifter waits): D learns chirality and joint-bend cues before the lifter commits to depth signs")
    d_acc_cap: float = _f(1.0, "skip D's update while its batch accuracy exceeds this (1: never)")
    d_r1: float = _f(0.0, "weight of the R1 penalty on the 2D and temporal discriminators: the squared gradient norm of their logits at the real poses, with poses measured in head-root distances (0: off)")
    d_r1_every: int = _f(1, "apply the R1 penalty on every K-th step only, weighted by K (lazy regularisation: the double backward costs about one more discriminator update)")
    d_r1_samples: int = _f(0, "take R1 over this many of the batch's real poses, in a forward of their own (0: all of them, from the update's own forward). With 64 the default's step took 0.37 s against 0.60 s over the whole batch and 0.29 s without R1")
    d_r1_until: int = _f(0, "R1 only in the early phase: its weight is d_r1 up to step d_r1_until - d_r1_fade, then falls linearly to 0 at step d_r1_until (0: R1 throughout)")
    d_r1_fade: int = _f(0, "steps over which the R1 weight falls to 0 before d_r1_until")
    d_input_noise: float = _f(0.0, "standard deviation of Gaussian noise added to every 2D pose the discriminators see, real and fake, in their updates and the lifter's adversarial terms (normalised units: the head-root distance is 1/c; 0: off)")
    collapse_guard: bool = _f(True, "roll back when the discriminator wins for good: when D's batch accuracy, averaged over guard_window steps, exceeds guard_acc (and, with guard_stretch set, the lifts' depth stretch exceeds it), restore the older of the last two healthy in-memory snapshots (taken every guard_window steps; the run's first state when there is none or the last rollback to it collapsed again) and draw the rotations from a fresh stream (at most guard_max_rollbacks times)")
    guard_acc: float = _f(0.9, "collapse_guard: D accuracy (window mean) that counts as a collapse; the healthy runs measured (batch 256 and 128, up to 6000 steps) stayed at or below 0.893, every collapse measured passed 0.9 within 100 steps of passing 0.85")
    guard_stretch: float = _f(0.0, "collapse_guard: also require the lifts' depth stretch (logged as depth_stretch: the median over the batch of the largest depth offset from the root over the image-plane radius), averaged over the window, above this (0: D's accuracy alone decides); healthy lifts of the synthetic data sit at 0.4-0.5 and stretched collapses reach 0.8-1.2, but a collapse into the depth-mirrored pose keeps a normal stretch")
    guard_window: int = _f(100, "collapse_guard: steps averaged, and steps between snapshots")
    guard_max_rollbacks: int = _f(3, "collapse_guard: rollbacks allowed in one run")
    sign_check: bool = _f(False, "every sign_check_every steps, ask D whether the lifts or their depth mirrors (the depth head negated) re-project, under the step's kind of random rotation, into more real-looking 2D poses; when the mirrors win sign_check_patience checks in a row, negate the lifter's depth head (and its average and optimiser moments): the run leaves a depth-mirrored basin in one step instead of having to climb out of it")
    sign_check_every: int = _f(50, "sign_check: steps between checks")
    sign_check_patience: int = _f(2, "sign_check: consecutive checks the mirrors must win before the head is negated")
    sign_check_start: int = _f(100, "sign_check: first step checked (D needs some steps before its judgement of chirality means anything)")
    adv_balance_target: float = _f(0.0, "D batch accuracy the adversarial gain steers toward: the lifter's adversarial weight is w_adv times a gain that grows while D's accuracy is above this and shrinks while below (0: off, gain 1)")
    adv_balance_rate: float = _f(0.05, "per-step rate of the adversarial gain: log(gain) moves by rate * (accuracy - target) each step")
    adv_balance_range: typing.List[float] = _f([0.25, 8.0], "[low, high] bounds of the adversarial gain")
    w_flow: float = _f(0.0, "weight of the flow prior: the negative log-likelihood (nats per coordinate) of the re-projected poses under a normalising-flow density of the real 2D poses, trained before the lifter and then frozen (0: off)")
    flow_steps: int = _f(1000, "updates of the flow prior's training (before the lifter's; counted in max_minutes)")
    flow_width: int = _f(128, "hidden width of the flow prior's couplings")
    flow_layers: int = _f(6, "affine couplings of the flow prior")
    flow_lr: float = _f(1e-3, "learning rate of the flow prior's training (Adam, cosine to 0)")
    flow_batch_size: int = _f(1024, "poses per update of the flow prior's training")
    flow_noise: float = _f(0.002, "standard deviation of the Gaussian noise added to the flow prior's training poses (normalised units: the head-root distance is 1/c), which smooths the density")
    flow_nll_cap: float = _f(0.0, "per-pose NLL (nats per coordinate) above which the flow loss grows only logarithmically: re-projections far outside the 2D data would otherwise give gradients orders of magnitude larger than the rest")

    # ---------------------------------------------------------------- discriminators
    d_width: int = _f(512, "2D discriminator width (paper 1024)")
    d_blocks: int = _f(3, "2D discriminator residual blocks (ref 3)")
    d_batch_norm: bool = _f(False, "2D discriminator BatchNorm (ref: none)")
    d_dropout: float = _f(0.0, "2D discriminator dropout")
    d_activation: str = _f("leaky_relu", "discriminator activation", ("relu", "leaky_relu", "gelu", "silu"))
    d_spectral_norm: bool = _f(False, "spectral normalisation in both discriminators")
    d_kinematic: bool = _f(True, "append bone vectors and chirality products (cross/dot with hip and shoulder axes) to D's input")
    d_flip_negatives: float = _f(1.0, "weight of real poses mirrored in x (labels kept: chirality-flipped people) as extra fakes for D (0: off)")
    temporal_offset: int = _f(5, "frame gap k of the temporal discriminator's pairs")
    t_width: int = _f(256, "temporal discriminator width")
    t_blocks: int = _f(2, "temporal discriminator residual blocks")
    t_with_pose: bool = _f(True, "temporal discriminator sees x_t alongside x_t - x_(t-k)")

    # ---------------------------------------------------------------- optimisation
    lr: float = _f(2e-4, "lifter learning rate")
    d_lr_ratio: float = _f(1.0, "discriminator learning rate / lifter learning rate (method.md's pitfalls: 0.25 with a weaker recipe)")
    beta1: float = _f(0.5, "Adam beta1")
    beta2: float = _f(0.9, "Adam beta2")
    weight_decay: float = _f(0.0, "AdamW weight decay (lifter and discriminators)")
    lr_schedule: str = _f("cosine", "constant, cosine (to lr_min_ratio) or exp (exp_decay per 1000 steps)", ("constant", "cosine", "exp"))
    lr_warmup: int = _f(0, "steps of linear learning-rate warm-up")
    lr_min_ratio: float = _f(0.05, "final learning rate / lr (cosine)")
    exp_decay: float = _f(0.9, "learning-rate factor per 1000 steps (exp)")
    ema: float = _f(0.998, "decay of an exponential moving average of the lifter's weights, used for validation, test and the saved model (0: off)")
    ema_warmup: float = _f(10.0, "the moving average's decay at step s is min(ema, (1 + s) / (ema_warmup + s)): with 10, a decay of 0.998 binds only after 4490 steps, so a budget run of 1700 steps averages over about its last s / 9 steps")
    grad_clip: float = _f(0.0, "clip the lifter's gradient norm (0: off)")
    supervised_standardize: bool = _f(True, "supervised mode: z-score the depth targets (fast training)")

    # ---------------------------------------------------------------- speed
    amp: str = _f("auto", "autocast of the networks: auto (bf16 where the hardware has fast bf16 matmuls, else none), none, bf16 or fp16; the geometry stays fp32",
                  ("auto", "none", "bf16", "fp16"))
    compile: bool = _f(False, "torch.compile the networks")
    ops_backend: str = _f("auto", "backend of the fused geometry ops: auto, cpu, cuda, triton, reference (pure torch)",
                          ("auto", "cpu", "cuda", "triton", "reference"))
    dist_backend: str = _f("auto", "torch.distributed backend under torchrun: auto (nccl on GPU, gloo on CPU), gloo, nccl")

    # ----------------------------------------------------------------------------------------
    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check types and ranges; raises :class:`ConfigError` naming the field."""
        for f in fields(self):
            v = getattr(self, f.name)
            ch = f.metadata.get("choices")
            if ch is not None and v not in ch:
                close = difflib.get_close_matches(str(v), ch, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"config: {f.name} = {v!r} is not one of {', '.join(ch)}{hint}")
        pos = ["steps", "batch_size", "width", "d_width", "t_width", "log_every", "d_steps", "cycle_views", "temporal_offset", "min_poses",
               "adapter_steps", "flow_steps", "flow_width", "flow_batch_size", "d_r1_every", "guard_window",
               "sign_check_every", "sign_check_patience", "bone_sequence_partners"]
        for name in pos:
            if getattr(self, name) < 1:
                raise ConfigError(f"config: {name} must be >= 1, got {getattr(self, name)}")
        nonneg = ["d_warmup", "blocks", "d_blocks", "t_blocks", "val_every", "val_samples", "ckpt_every", "max_minutes", "ckpt_minutes",
                  "lr_warmup", "consistency_warmup", "w_depth_extent", "depth_extent_margin", "w_3d_final", "w_3d_ramp", "w_3d_ramp_start", "grad_clip", "gp_weight", "threads", "weight_decay",
                  "w_flow", "flow_noise", "adv_balance_rate", "d_r1", "d_input_noise", "guard_max_rollbacks", "guard_stretch", "renorm_floor", "rotation_warmup",
                  "sign_check_start", "d_r1_samples", "d_r1_until", "d_r1_fade", "elevation_anneal", "elevation_anneal_start", "w_bone_sequence", "bone_sequence_start",
                  "bone_sequence_ramp"]
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ConfigError(f"config: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("dropout", "d_dropout", "label_smoothing", "extra_target_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config: {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("c", "min_depth", "lr", "d_lr_ratio", "flow_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"config: {name} must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config: {name} must be in [0, 1), got {getattr(self, name)}")
        if not self.ema_warmup > 1:
            raise ConfigError(f"config: ema_warmup must be > 1 (the decay (1 + s) / (ema_warmup + s) stays below 1), "
                              f"got {self.ema_warmup}")
        for name in ("azimuth_range", "elevation_range"):
            r = getattr(self, name)
            if len(r) != 2 or not r[0] <= r[1]:
                raise ConfigError(f"config: {name} must be [low, high] with low <= high, got {r}")
        if not 0 <= self.rotation_warmup_start <= 1:
            raise ConfigError(f"config: rotation_warmup_start must be in [0, 1], got {self.rotation_warmup_start}")
        if self.adv_level_views and self.rotation_distribution != "uniform":
            raise ConfigError("config: adv_level_views needs rotation_distribution = 'uniform' "
                              f"(got {self.rotation_distribution!r}: a haar rotation has no elevation to drop)")
        if self.elevation_anneal and self.rotation_distribution != "uniform":
            raise ConfigError("config: elevation_anneal needs rotation_distribution = 'uniform' "
                              f"(got {self.rotation_distribution!r}: a haar rotation has no elevation range)")
        if self.rotation_warmup and self.rotation_distribution != "uniform":
            raise ConfigError("config: rotation_warmup needs rotation_distribution = 'uniform' "
                              f"(got {self.rotation_distribution!r}: a haar rotation has no ranges to widen)")
        if self.flow_layers < 2:
            raise ConfigError(f"config: flow_layers must be >= 2, got {self.flow_layers}")
        if self.d_r1_fade > self.d_r1_until:
            raise ConfigError(f"config: d_r1_fade ({self.d_r1_fade}) must not exceed d_r1_until ({self.d_r1_until}): "
                              "the fade ends at d_r1_until")
        if not 0.5 < self.guard_acc <= 1:
            raise ConfigError(f"config: guard_acc must be in (0.5, 1], got {self.guard_acc}")
        if not 0 <= self.adv_balance_target < 1:
            raise ConfigError(f"config: adv_balance_target must be in [0, 1), got {self.adv_balance_target}")
        r = self.adv_balance_range
        if len(r) != 2 or not 0 < r[0] <= 1 <= r[1]:
            raise ConfigError(f"config: adv_balance_range must be [low, high] with 0 < low <= 1 <= high, got {r}")
        if not 0 < self.d_acc_cap <= 1:
            raise ConfigError(f"config: d_acc_cap must be in (0, 1], got {self.d_acc_cap}")
        if self.preset not in PRESETS:
            close = difflib.get_close_matches(self.preset, PRESETS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config: unknown preset {self.preset!r} (presets: {', '.join(PRESETS)}){hint}")
        return self

    # convenience ----------------------------------------------------------------------------
    @property
    def azimuth_rad(self) -> tuple[float, float]:
        return (math.radians(self.azimuth_range[0]), math.radians(self.azimuth_range[1]))

    @property
    def elevation_rad(self) -> tuple[float, float]:
        return (math.radians(self.elevation_range[0]), math.radians(self.elevation_range[1]))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


#: Presets: overrides of the dataclass defaults. ``fast`` is the default (empty: the defaults).
PRESETS: dict[str, dict] = {
    "fast": {},
    # The paper's sizes and loss weights, with the stabilisers of method.md's pitfalls kept.
    "paper": dict(width=1024, blocks=4, dropout=0.5, batch_norm=True, w_adv=1.0, w_2d=10.0, w_3d=0.001,
                  w_temporal=1.0, d_width=1024, d_blocks=3, t_width=1024, t_blocks=3, d_kinematic=False,
                  d_flip_negatives=0.0, flip_augment=False, d_steps=1, d_lr_ratio=0.25, ema=0.0, w_bone_sym=0.0,
                  w_bone_temporal=0.0, w_bone_sequence=0.0, rotation_axis="camera", collapse_guard=False, batch_size=1024, steps=20000,
                  max_minutes=0.0, renorm_floor=0.0),
    # The recipe taken literally (diverges early, see method.md): default init, hard floors,
    # equal learning rates, Adam's default betas, no input standardisation.
    "paper-literal": dict(width=1024, blocks=4, dropout=0.5, batch_norm=True, w_adv=1.0, w_2d=10.0, w_3d=0.001,
                          w_temporal=1.0, d_width=1024, d_blocks=3, t_width=1024, t_blocks=3, d_kinematic=False,
                          d_flip_negatives=0.0, flip_augment=False, d_steps=1, ema=0.0, out_init_scale=1.0,
                          depth_floor="hard", projection_floor="hard", standardize_inputs=False,
                          d_lr_ratio=1.0, beta1=0.9, beta2=0.999, lr=1e-4, lr_schedule="constant", amp="none",
                          w_bone_sym=0.0, w_bone_temporal=0.0, w_bone_sequence=0.0, use_confidence=False, rotation_axis="camera",
                          collapse_guard=False, batch_size=1024,
                          steps=20000, max_minutes=0.0, renorm_floor=0.0),
    # Tiny networks and few steps, for tests and smoke runs.
    "tiny": dict(width=32, blocks=1, d_width=32, d_blocks=1, t_width=32, t_blocks=1, batch_size=64, steps=20,
                 val_every=10, val_samples=256, log_every=5, ckpt_every=10, max_minutes=0.0, progress=False,
                 plots=False),
}


# -------------------------------------------------------------------------------------- parsing
def _type_of(name: str):
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def coerce(name: str, value):
    """Convert ``value`` (from TOML, YAML, JSON or a CLI string) to the type of field ``name``."""
    tp = _type_of(name)
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    try:
        if typing.get_origin(tp) in (list, typing.List):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            return [float(v) for v in value]
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"config: {name} = {value!r} is not a valid {getattr(tp, '__name__', tp)}")


def unknown_key_error(key: str, where: str = "config") -> ConfigError:
    names = TrainConfig.field_names()
    norm = key.replace("-", "_")
    close = difflib.get_close_matches(norm, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def load_config_file(path: str) -> dict:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``, needs PyYAML) or JSON file into a flat dict.

    Tables/sections are flattened (``[model] width = 512`` is ``width = 512``) so a file may be
    grouped however the user likes. Keys are checked against :class:`TrainConfig`.
    """
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if ext == ".toml":
        import tomllib
        with open(path, "rb") as f:
            try:
                raw = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path!r}: {exc}") from None
    elif ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"config file {path!r}: YAML needs PyYAML (pip install pyyaml); TOML needs nothing") from None
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    elif ext == ".json":
        with open(path) as f:
            raw = json.load(f)
    else:
        raise ConfigError(f"config file {path!r}: unknown extension {ext!r} (use .toml, .yaml or .json)")
    flat: dict = {}

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                flat[k.replace("-", "_")] = v
    walk(raw)
    names = set(TrainConfig.field_names())
    for k in flat:
        if k not in names:
            raise unknown_key_error(k, f"config file {path!r}")
    return flat


def apply_overrides(base: dict, overrides: dict, where: str = "config") -> dict:
    """``base`` updated with type-coerced ``overrides`` (unknown keys raise :class:`ConfigError`)."""
    out = dict(base)
    names = set(TrainConfig.field_names())
    for k, v in overrides.items():
        k = k.replace("-", "_")
        if k not in names:
            raise unknown_key_error(k, where)
        out[k] = coerce(k, v)
    return out


def resolve_config(file_values: dict | None = None, cli_values: dict | None = None,
                   base: dict | None = None) -> TrainConfig:
    """Defaults <- preset <- ``base`` (e.g. a checkpoint's config) <- config file <- CLI.

    The preset is taken from the CLI, else the file, else ``base``, else ``fast``.
    """
    file_values, cli_values = dict(file_values or {}), dict(cli_values or {})
    preset = cli_values.get("preset", file_values.get("preset", (base or {}).get("preset", "fast")))
    if preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"config: unknown preset {preset!r} (presets: {', '.join(PRESETS)}){hint}")
    values = dataclasses.asdict(TrainConfig())
    values = apply_overrides(values, PRESETS[preset], f"preset {preset!r}")
    if base:
        values = apply_overrides(values, base, "checkpoint config")
    values = apply_overrides(values, file_values, "config file")
    values = apply_overrides(values, cli_values, "command line")
    values["preset"] = preset
    return TrainConfig(**values)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def config_to_toml(cfg: TrainConfig) -> str:
    """The config as TOML, one commented line per field (``None`` fields are commented out)."""
    lines = ["# fastlift training config (resolved). Re-run with: python -m fastlift.train --config config.toml", ""]
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        help_ = f.metadata.get("help", "")
        if v is None:
            lines.append(f"# {f.name} = (none)  # {help_}")
        else:
            lines.append(f"{f.name} = {_toml_value(v)}  # {help_}")
    return "\n".join(lines) + "\n"


#: Fields that fix the shapes and meaning of the saved state: a checkpoint is only resumable (or
#: loadable with --init) under a config that agrees on these. The mode is not among them: a
#: supervised lifter can initialise an unsupervised run (its output standardisation comes along),
#: but a run resumes only in its own mode.
STRUCTURAL_FIELDS = ("layout", "width", "blocks", "batch_norm", "activation", "d_width", "d_blocks",
                     "d_batch_norm", "d_activation", "d_spectral_norm", "d_kinematic", "t_width", "t_blocks",
                     "t_with_pose", "c", "depth_floor", "min_depth")
#: Fields that must also agree for an exact resume (they change the optimiser state or data order).
RESUME_FIELDS = STRUCTURAL_FIELDS + ("mode", "use_discriminator", "use_temporal", "gan_loss", "batch_size", "seed",
                                     "data", "synthetic_seed", "temporal_offset", "extra_2d", "extra_layout",
                                     "extra_adapt", "adapter_steps", "extra_target_fraction", "flow_width",
                                     "flow_layers", "flow_steps")
#: Fields added after the first checkpoints: absent from a checkpoint means their default.
_LATER_FIELDS = ("extra_2d", "extra_layout", "extra_adapt", "adapter_steps", "extra_target_fraction", "flow_width",
                 "flow_layers", "flow_steps")


def structural_diff(saved: dict, cfg: TrainConfig, keys=STRUCTURAL_FIELDS) -> list[str]:
    """``"name: checkpoint X, config Y"`` for every key in ``keys`` on which the two disagree."""
    out = []
    for k in keys:
        missing = TrainConfig.__dataclass_fields__[k].default if k in _LATER_FIELDS else "(missing)"
        a, b = saved.get(k, missing), getattr(cfg, k)
        if a != b:
            out.append(f"{k}: checkpoint {a!r}, config {b!r}")
    return out
