"""Training, evaluation and inference: the trainer, its hooks, a CPU-capable launch, a predictor."""

from .defaults import add_dataset_argument, argument_parser, build_config, setup
from .evaluators import build_evaluator
from .hooks import CheckpointHook, EvalHook, LossCurveHook, plot_loss_curve, read_metrics
from .launch import choose_backend, launch, setup_local_process_group
from .output_lock import OutputFolderLocked, lock_output_dir
from .predictor import BatchPredictor, build_inference_model
from .preemption import PREEMPTED_EXIT_CODE, PreemptionHook, TrainingPreempted
from .train_loop import CheckedTrainLoop, check_losses_finite
from .trainer import Trainer, check_dataset_classes, create_ddp_model
from .visualization import draw_predictions, filter_by_score, score_of

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "OutputFolderLocked",
    "PreemptionHook",
    "TrainingPreempted",
    "lock_output_dir",
    "BatchPredictor",
    "CheckedTrainLoop",
    "CheckpointHook",
    "EvalHook",
    "LossCurveHook",
    "Trainer",
    "add_dataset_argument",
    "argument_parser",
    "build_config",
    "build_evaluator",
    "build_inference_model",
    "check_dataset_classes",
    "check_losses_finite",
    "choose_backend",
    "create_ddp_model",
    "draw_predictions",
    "filter_by_score",
    "launch",
    "plot_loss_curve",
    "read_metrics",
    "score_of",
    "setup",
    "setup_local_process_group",
]
