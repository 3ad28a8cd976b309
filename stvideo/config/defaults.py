"""Every config key stvideo knows, with its default and a one-line comment.

Key names follow PySlowFast where a key exists there, so configs port with few edits.
A key that is not declared here is an error (see ``stvideo.config.load``).
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------- #
# Misc / run
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"  # where config.yaml, logs, checkpoints and test results go
_C.RNG_SEED = 0  # seed for python, numpy and torch (per-rank offset added in training)
_C.NUM_GPUS = 0  # GPUs (processes) per machine; 0 means one CPU process
_C.NUM_SHARDS = 1  # number of machines (nodes)
_C.SHARD_ID = 0  # index of this machine among NUM_SHARDS
_C.DIST_BACKEND = "auto"  # torch.distributed backend: auto (nccl on GPU, gloo on CPU), nccl or gloo
_C.LOG_PERIOD = 10  # iterations between train_iter lines in json_stats.log
_C.DETERMINISTIC = True  # torch.use_deterministic_algorithms(warn_only) and cudnn.deterministic

# ---------------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------------- #
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""  # folder with train/val/test annotation files
_C.DATA.PATH_PREFIX = ""  # joined onto relative video paths in the annotation files
_C.DATA.PATH_LABEL_SEPARATOR = ""  # separator in csv lines; "" = per line, the first of tab, comma,
# whitespace that leaves an integer label
_C.DATA.NUM_FRAMES = 16  # frames per clip fed to the model
_C.DATA.SAMPLING_RATE = 4  # stride between sampled frames (dense sampling)
_C.DATA.TARGET_FPS = 30  # dense sampling stride is in frames at this fps (fps-aware)
_C.DATA.SAMPLING = "auto"  # dense, segment (TSN-style) or auto (dense for Kinetics, segment for SSv2)
_C.DATA.OUT_OF_BOUND = "loop"  # dense clips longer than the video: loop or repeat_last frame
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]  # short-side jitter range for training
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.0]  # RandomResizedCrop area range; [] = short-side jitter
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]  # RandomResizedCrop aspect-ratio range
_C.DATA.TRAIN_CROP_SIZE = 224  # training crop size (pixels)
_C.DATA.TEST_CROP_SIZE = 224  # test crop size; short side is resized to this before crops
_C.DATA.MEAN = [0.45, 0.45, 0.45]  # per-channel mean for normalisation (0-1 range)
_C.DATA.STD = [0.225, 0.225, 0.225]  # per-channel std for normalisation
_C.DATA.RANDOM_FLIP = True  # random horizontal flip in training
_C.DATA.FLIP_LABEL_MAP = ""  # optional json {label: flipped_label} for label-aware flip (SSv2)
_C.DATA.INPUT_CHANNEL_NUM = 3  # input channels
_C.DATA.DECODING_BACKEND = "decord"  # video decoder: decord, pyav or torchcodec (docs/data.md, "Decoders")
_C.DATA.DECODE_DEVICE = "cpu"  # cpu, or cuda to decode with torchcodec on the GPU (frames return to the host)
_C.DATA.DECODE_SHORT_SIDE = 0  # train: resize on decode to this short side if > 0 (val/test: TEST_CROP_SIZE)
# val/test short side to TEST_CROP_SIZE: by the decoder's own scaler (decoder), or a full-size decode then
# torchvision's antialiased bilinear resize, the scaler of the training crops, for test on the evaluator's
# device (torchvision: faster, and the same pixels from every decoder; docs/data.md, "Test pipeline")
_C.DATA.EVAL_RESIZE = "torchvision"  # val/test resize: torchvision or decoder (comment above)
_C.DATA.VIDEO_EXT = ".webm"  # SSv2: file extension appended to video ids
_C.DATA.MAX_CONSECUTIVE_FAILURES = 10  # training stops after this many undecodable samples in a row
_C.DATA.NUM_RETRIES = 10  # other samples tried when one video fails to decode in training
_C.DATA.ON_DAMAGED = "warn"  # video decodes but is truncated or has decoder errors: warn (use it) or skip
_C.DATA.SYNTH_GENERATE = True  # generate the synthetic dataset into PATH_TO_DATA_DIR if it is empty

# ---------------------------------------------------------------------------- #
# Synthetic dataset (stvideo.data.synth)
# ---------------------------------------------------------------------------- #
_C.SYNTH = CfgNode()
_C.SYNTH.NUM_TRAIN_PER_CLASS = 60  # training videos per class
_C.SYNTH.NUM_VAL_PER_CLASS = 10  # validation videos per class
_C.SYNTH.NUM_TEST_PER_CLASS = 20  # test videos per class
_C.SYNTH.NUM_FRAMES = 32  # frames per generated video
_C.SYNTH.SIZE = 64  # frame side of generated videos (pixels; even; not 16/24/48/72: decord bug)
_C.SYNTH.FPS = 30  # frame rate written into the video files
_C.SYNTH.CODEC = "h264"  # h264 (mp4) or vp9 (webm)
_C.SYNTH.SEED = 0  # generator seed: same seed, same videos
_C.SYNTH.SSV2 = False  # also write an SSv2-style copy (json annotations, VP9 webm) under ssv2/

# ---------------------------------------------------------------------------- #
# Data loader
# ---------------------------------------------------------------------------- #
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 2  # worker processes per loader
_C.DATA_LOADER.PIN_MEMORY = True  # pin host memory (only used with a GPU)
_C.DATA_LOADER.DECODE_THREADS = 1  # decoder threads per worker

# ---------------------------------------------------------------------------- #
# Augmentation
# ---------------------------------------------------------------------------- #
_C.AUG = CfgNode()
_C.AUG.ENABLE = False  # RandAugment + random erasing in training
_C.AUG.NUM_SAMPLE = 1  # repeated augmentation: decode once, augment this many times
_C.AUG.AA_TYPE = "rand-m7-n4-mstd0.5-inc1"  # timm RandAugment spec, same ops on every frame of a clip
_C.AUG.RA_CLIP_STATISTICS = True  # RandAugment's AutoContrast/Equalize/Contrast use whole-clip statistics
# (one tone curve for every frame); False: per-frame statistics, as torchvision / PySlowFast / VideoMAE
_C.AUG.RE_PROB = 0.25  # random erasing probability (same box on every frame)

_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = False  # mixup / cutmix on whole clips (timm Mixup)
_C.MIXUP.ALPHA = 0.8  # mixup beta-distribution alpha
_C.MIXUP.CUTMIX_ALPHA = 1.0  # cutmix alpha (same box cut in every frame)
_C.MIXUP.PROB = 1.0  # probability of applying mixup or cutmix to a batch
_C.MIXUP.SWITCH_PROB = 0.5  # probability of cutmix instead of mixup
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1  # label smoothing used inside mixup targets

# ---------------------------------------------------------------------------- #
# PyTorchVideo model zoo (stvideo.models.ptv): x3d, slow, slowfast, mvit, r2plus1d, csn
# ---------------------------------------------------------------------------- #
_C.PTV = CfgNode()
_C.PTV.VARIANT = ""  # zoo variant; "" = the arch's first: x3d m/xs/s/l, slow r50, slowfast r50_8x8/r50_4x16/
# r101_8x8/t, mvit b_16x4/b_32x3/t, r2plus1d r50, csn r101 (t: small synthetic-size variants)
_C.SLOWFAST = CfgNode()
_C.SLOWFAST.ALPHA = 4  # fast/slow frame-rate ratio: the slow pathway is every ALPHA-th frame of the clip

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CfgNode()
_C.MODEL.ARCH = "vit"  # registry name (stvideo.models.MODEL_REGISTRY): vit, stvit, evovit, swin, x3d, ...
_C.MODEL.SIZE = "tiny"  # width/depth preset: tiny, small, base, large, huge (ViT; VIT.* > 0 overrides)
_C.MODEL.NUM_CLASSES = 400  # number of output classes
_C.MODEL.DROPOUT_RATE = 0.0  # dropout before the classifier
_C.MODEL.DROP_PATH_RATE = 0.1  # stochastic depth, linearly increasing over layers
_C.MODEL.LABEL_SMOOTHING = 0.1  # cross-entropy label smoothing (with mixup: MIXUP.LABEL_SMOOTH_VALUE)
_C.MODEL.PRETRAINED = ""  # path to a timm (image) or VideoMAE (video) checkpoint to initialise from
_C.MODEL.PRETRAINED_INFLATE = "center"  # 2D->3D patch-embedding inflation: center or average
_C.MODEL.PRETRAINED_FORMAT = "auto"  # auto, timm or videomae
_C.MODEL.ACT_CHECKPOINT = False  # activation checkpointing per block (ViT archs, Swin); an error elsewhere
_C.MODEL.COMPILE = False  # torch.compile the model (train and eval; nn.Module.compile, names unchanged)
_C.MODEL.COMPILE_MODE = "default"  # inductor mode: default, reduce-overhead, max-autotune(-no-cudagraphs)
_C.MODEL.COMPILE_BACKEND = "inductor"  # torch.compile backend: inductor, or aot_eager / eager (debugging)
_C.MODEL.PATCH_EMBED = "linear"  # tube embedding: linear (one Conv3d; loads timm) or conv (conv stem)
_C.MODEL.STEM_WIDTH = 16  # conv stem: channels of its first conv, doubled by each further conv

# Video ViT backbone (stvideo.models.vit)
_C.VIT = CfgNode()
_C.VIT.EMBED_DIM = 0  # token width; 0 = from MODEL.SIZE
_C.VIT.DEPTH = 0  # number of transformer layers; 0 = from MODEL.SIZE
_C.VIT.NUM_HEADS = 0  # attention heads; 0 = from MODEL.SIZE
_C.VIT.MLP_RATIO = 4.0  # MLP hidden width / token width
_C.VIT.PATCH_SIZE = 16  # spatial patch size p of a tube
_C.VIT.TUBELET_SIZE = 2  # temporal size t of a tube
_C.VIT.POS_EMBED = "joint"  # learned position embedding: joint (T*H*W table) or separable (T + H*W)
_C.VIT.POS_EMBED_INIT = "sincos"  # position-embedding init: sincos (3D table) or trunc_normal (std 0.02)
_C.VIT.CLS_TOKEN = True  # prepend a cls token
_C.VIT.HEAD_POOL = "mean"  # classifier input: mean (of patch tokens) or cls
_C.VIT.QKV_BIAS = True  # bias in the qkv projection
_C.VIT.LAYER_SCALE_INIT = 0.0  # LayerScale init value; 0 disables LayerScale
_C.VIT.ATTN_DROP = 0.0  # attention dropout

# STViT semantic tokens (stvideo.models.stvit)
_C.STVIT = CfgNode()
_C.STVIT.START_LAYER = -1  # first generation layer (layers before run on all tokens); -1 = depth // 3
_C.STVIT.NUM_SEMANTIC_LAYERS = -1  # semantic-only layers after the 2 generation layers (per unit); -1 = fill
# the depth (STViT: depth - START_LAYER - 2; STViT-R: what NUM_UNITS dumbbells leave)
_C.STVIT.GRID = [4, 4, 4]  # semantic-token grid (T', H', W') the centers are pooled to (stvit_b: 64 tokens)
_C.STVIT.GRID_MODE = "joint"  # joint: one 3D grid (stvit_b); slice: per-temporal-slice 2D grids (stvit_r_b)
_C.STVIT.POOL = "max"  # center pooling: max or avg
_C.STVIT.GLOBAL_CENTERS = True  # learned global center tensor added to layer-2 queries (stvit_swin: SWIN key)
_C.STVIT.LAYER_SCALE_INIT = 1e-5  # LayerScale init in STViT blocks; 0 disables
_C.STVIT.SEMANTIC_LAYER_SCALE = False  # also LayerScale the semantic-only layers (as the official code)
_C.STVIT.NUM_UNITS = 1  # STViT-R: number of dumbbell units
_C.STVIT.RETURN_DENSE = False  # STViT-R: return (B, C, T, H, W) features instead of logits

# Evo-ViT slow-fast token evolution (stvideo.models.evo)
_C.EVO = CfgNode()
_C.EVO.START_LAYER = -1  # first layer with token selection; -1 = depth // 3
_C.EVO.KEEP_RATIO = 0.5  # fraction of patch tokens on the slow path
_C.EVO.EMA_WEIGHT = 0.5  # weight of the new layer's class attention in the moving average
_C.EVO.LEARNABLE_EMA = False  # learn the moving-average weight (sigmoid of a scalar per layer)
_C.EVO.FAST_UPDATE = "representative"  # representative (official LeViT code) or identity (official DeiT code)
_C.EVO.STAGE_LAYERS = []  # stage-wise selection happens at these layers; [] = depth // 3 and 2 * depth // 3
_C.EVO.STAGEWISE_FRACTION = 0.667  # share of MAX_EPOCH selecting layer-wise (paper 2/3); 1 = never stage-wise
_C.EVO.STAGEWISE_EPOCH = -1  # 0-based epoch training turns stage-wise; -1 = from STAGEWISE_FRACTION
_C.EVO.EVAL_SELECTION = "stagewise"  # val/test: stagewise, or training (mode training is in; official DeiT)
_C.EVO.AUX_CLS_WEIGHT = 0.5  # weight of the auxiliary cls-token head loss (mean-pool head gets 1 - w)

# Controls at matched FLOPs (stvideo.models.controls)
_C.CONTROL = CfgNode()
_C.CONTROL.START_LAYER = -1  # layer from which tokens are reduced; -1 = depth // 3
_C.CONTROL.KEEP_TOKENS = 0  # random_drop: patch tokens kept; 0 = prod(STVIT.GRID) (uniform_pool: STVIT.GRID)

# ToMe token merging (stvideo.models.tome)
_C.TOME = CfgNode()
_C.TOME.R = [8]  # tokens merged per layer: [r] for every layer, or one entry per layer; [0] = plain ViT
_C.TOME.START_LAYER = 0  # layers before it merge nothing
_C.TOME.PROP_ATTN = True  # proportional attention: log(token size) added to the attention logits
_C.TOME.KEEP_CLS = True  # never merge the cls token
_C.TOME.RETURN_DENSE = False  # return unmerged (B, C, T, H, W) features instead of logits

# Run-length tokenization (stvideo.models.rlt)
_C.RLT = CfgNode()
_C.RLT.THRESHOLD = 0.1  # drop a tube whose mean |difference| to the tube one tubelet earlier is below this
_C.RLT.LENGTH_EMBED = True  # learned run-length embedding (zero-initialised) added to kept tubes
_C.RLT.RETURN_DENSE = False  # return (B, C, T, H, W) features (dropped tubes take their run's feature)

# Video Swin (stvideo.models.swin)
_C.SWIN = CfgNode()
_C.SWIN.EMBED_DIM = 0  # stage-1 width; 0 = from MODEL.SIZE
_C.SWIN.DEPTHS = []  # blocks per stage; [] = from MODEL.SIZE
_C.SWIN.NUM_HEADS = []  # heads per stage; [] = from MODEL.SIZE
_C.SWIN.PATCH_SIZE = [2, 4, 4]  # 3D patch partition (t, h, w)
_C.SWIN.WINDOW_SIZE = [8, 7, 7]  # 3D attention window (t, h, w), clamped to the feature size
_C.SWIN.MLP_RATIO = 4.0  # MLP hidden width / token width
_C.SWIN.QKV_BIAS = True  # bias in the qkv projection
_C.SWIN.ATTN_DROP = 0.0  # attention dropout
_C.SWIN.SEMANTIC_STAGES = [2]  # stvit_swin: stages (0-based) that use STViT-local semantic tokens
_C.SWIN.SEMANTIC_WINDOW_GRID = [1, 3, 3]  # semantic tokens per window (t, h, w), clamped to the window
_C.SWIN.SEMANTIC_CONTEXT = [8, 10, 10]  # image-token neighbourhood (t, h, w) of generation layer 1
_C.SWIN.SEMANTIC_CONTEXT_GEN2 = [8, 21, 21]  # detection variant: image-token neighbourhood of layer 2
_C.SWIN.STVIT_VARIANT = "classification"  # generation wiring of the released code: classification / detection
_C.SWIN.STVIT_SHORTCUT = "auto"  # layer-1 residual from the centers: auto (as released), add, none
_C.SWIN.STVIT_GLOBAL_CENTERS = "auto"  # learned G on the layer-2 queries: auto (as released), add, none
_C.SWIN.RESTORE = False  # STViT-R-local: restore full-resolution tokens at the end of the unit

# ---------------------------------------------------------------------------- #
# Training
# ---------------------------------------------------------------------------- #
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True  # run training
_C.TRAIN.DATASET = "kinetics"  # dataset registry name: kinetics, ssv2, synth
_C.TRAIN.BATCH_SIZE = 64  # global batch size over all processes
_C.TRAIN.EVAL_PERIOD = 1  # epochs between validations (0 = never)
_C.TRAIN.CHECKPOINT_PERIOD = 1  # epochs between kept periodic checkpoints (last is always written)
_C.TRAIN.AUTO_RESUME = True  # resume from OUTPUT_DIR/checkpoints/last.pyth if it exists
_C.TRAIN.CHECKPOINT_FILE_PATH = ""  # initialise weights from this stvideo checkpoint (no resume of state)
_C.TRAIN.MIXED_PRECISION = True  # autocast on GPU (bf16 if supported, else fp16 with a GradScaler)
_C.TRAIN.ITERS_PER_EPOCH = 0  # debug: cap iterations per epoch (0 = full epoch)
_C.TRAIN.STRATEGY = "ddp"  # ddp (replicas) or fsdp (FSDP2 shards + sharded DCP checkpoints; docs/launch.md)

# ---------------------------------------------------------------------------- #
# Testing
# ---------------------------------------------------------------------------- #
_C.TEST = CfgNode()
_C.TEST.ENABLE = True  # run multi-view testing after training
_C.TEST.DATASET = "kinetics"  # dataset registry name for testing
_C.TEST.SPLIT = "test"  # annotation split used for testing
_C.TEST.BATCH_SIZE = 8  # videos per test batch (all views of a video travel together)
_C.TEST.CHECKPOINT_FILE_PATH = ""  # weights to test; "" = the model just trained (or last checkpoint)
_C.TEST.NUM_ENSEMBLE_VIEWS = 5  # temporal clips per video
_C.TEST.NUM_SPATIAL_CROPS = 3  # spatial crops per clip (3 cover the long side)
_C.TEST.ENSEMBLE_METHOD = "prob_mean"  # view aggregation: prob_mean, logit_mean or max
_C.TEST.NUM_TEMPORAL_CLIPS = []  # extra view counts (temporal clips) to evaluate in the same run

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CfgNode()
_C.SOLVER.OPTIMIZING_METHOD = "adamw"  # timm optimizer name: adamw, sgd, ...
_C.SOLVER.BASE_LR = 1e-3  # learning rate at the reference batch size (see BASE_LR_SCALE)
_C.SOLVER.BASE_LR_SCALE = "linear"  # lr scaling with global batch: linear (lr * batch / 256) or none
_C.SOLVER.MAX_EPOCH = 30  # training epochs
_C.SOLVER.WARMUP_EPOCHS = 5.0  # linear warm-up length (epochs, fractional allowed)
_C.SOLVER.WARMUP_START_LR = 1e-6  # learning rate at the start of warm-up
_C.SOLVER.COSINE_END_LR = 1e-6  # learning rate at the end of the cosine schedule
_C.SOLVER.WEIGHT_DECAY = 0.05  # decoupled weight decay
_C.SOLVER.ZERO_WD_1D_PARAM = True  # no weight decay on biases, norms, tokens and position embeddings
_C.SOLVER.BETAS = [0.9, 0.999]  # AdamW betas
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.CLIP_GRAD_L2NORM = 1.0  # gradient clipping max L2 norm (0 = off)

# ---------------------------------------------------------------------------- #
# Logging
# ---------------------------------------------------------------------------- #
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False  # also write TensorBoard scalars to OUTPUT_DIR/tb

# ---------------------------------------------------------------------------- #
# Launch (stvideo.launch; tools/submit.py)
# ---------------------------------------------------------------------------- #
_C.LAUNCH = CfgNode()
_C.LAUNCH.SNAPSHOT_CODE = True  # copy the code into the job folder so later edits do not affect the job
_C.LAUNCH.PARTITION = ""  # SLURM partition (--partition); "" = the cluster's default partition
_C.LAUNCH.TIMEOUT_MIN = 4320  # job time limit in minutes (--timeout); the job requeues itself when it is hit
_C.LAUNCH.MEM_GB = 0  # memory per node in GB (--mem); 0 = the cluster's default
_C.LAUNCH.CPUS_PER_TASK = 0  # CPU cores per task (one task per GPU); 0 = DATA_LOADER.NUM_WORKERS + 1
_C.LAUNCH.CONSTRAINT = ""  # SLURM node feature constraint (--constraint), e.g. "volta32gb"
_C.LAUNCH.ACCOUNT = ""  # SLURM account to charge (--account)
_C.LAUNCH.QOS = ""  # SLURM quality of service (--qos)
_C.LAUNCH.SIGNAL_DELAY_S = 120  # SLURM signals the job this long before the time limit (checkpoint + requeue)
_C.LAUNCH.MAX_NUM_TIMEOUT = 30  # requeues allowed after hitting the time limit (preemptions do not count)
_C.LAUNCH.JOB_DIR = ""  # submitit folder (job scripts, logs, code snapshot); "" = OUTPUT_DIR/submitit


# Allowed values of enumerated string keys, checked when a config is loaded.
CHOICES = {
    "DIST_BACKEND": ("auto", "nccl", "gloo"),
    "DATA.SAMPLING": ("auto", "dense", "segment"),
    "DATA.OUT_OF_BOUND": ("loop", "repeat_last"),
    "DATA.DECODING_BACKEND": ("decord", "pyav", "torchcodec"),
    "DATA.DECODE_DEVICE": ("cpu", "cuda"),
    "DATA.EVAL_RESIZE": ("decoder", "torchvision"),
    "DATA.ON_DAMAGED": ("warn", "skip"),
    "SYNTH.CODEC": ("h264", "vp9"),
    "MODEL.SIZE": ("tiny", "small", "base", "large", "huge"),
    "MODEL.PRETRAINED_INFLATE": ("center", "average"),
    "MODEL.PRETRAINED_FORMAT": ("auto", "timm", "videomae"),
    "MODEL.PATCH_EMBED": ("linear", "conv"),
    "MODEL.COMPILE_MODE": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "MODEL.COMPILE_BACKEND": ("inductor", "aot_eager", "eager"),
    "VIT.POS_EMBED": ("joint", "separable"),
    "VIT.POS_EMBED_INIT": ("sincos", "trunc_normal"),
    "VIT.HEAD_POOL": ("mean", "cls"),
    "STVIT.GRID_MODE": ("slice", "joint"),
    "STVIT.POOL": ("max", "avg"),
    "SWIN.STVIT_VARIANT": ("classification", "detection"),
    "SWIN.STVIT_SHORTCUT": ("auto", "add", "none"),
    "SWIN.STVIT_GLOBAL_CENTERS": ("auto", "add", "none"),
    "EVO.FAST_UPDATE": ("representative", "identity"),
    "EVO.EVAL_SELECTION": ("stagewise", "training"),
    "TEST.ENSEMBLE_METHOD": ("prob_mean", "logit_mean", "max"),
    "SOLVER.BASE_LR_SCALE": ("linear", "none"),
    "TRAIN.STRATEGY": ("ddp", "fsdp"),
}


def get_cfg() -> CfgNode:
    """Return a fresh copy of the defaults."""
    return _C.clone()
