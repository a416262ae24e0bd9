"""The run configuration: ``schema.py`` (typed dataclasses), ``loading.py`` (YAML, overrides,
``base:``), ``checks.py`` (cross-field rules). Import from here."""

from recmtl.config.loading import (
    build_dataclass,
    config_from_dict,
    derive,
    flatten,
    load_config,
    read_yaml_mapping,
)
from recmtl.config.schema import (
    ARCHITECTURES,
    Config,
    DailyConfig,
    DataConfig,
    EvaluateConfig,
    ExportConfig,
    FeaturesConfig,
    LossConfig,
    ManagedCollisionConfig,
    MlflowConfig,
    ModelConfig,
    ScheduleConfig,
    SequenceConfig,
    SparseFeatureConfig,
    SyntheticConfig,
    TableConfig,
    TaskConfig,
    TrainConfig,
)
from recmtl.errors import ConfigError

__all__ = [
    "ARCHITECTURES", "Config", "ConfigError", "DailyConfig", "DataConfig", "EvaluateConfig", "ExportConfig",
    "FeaturesConfig", "LossConfig",
    "ManagedCollisionConfig", "MlflowConfig", "ModelConfig", "ScheduleConfig", "SequenceConfig",
    "SparseFeatureConfig", "SyntheticConfig", "TableConfig", "TaskConfig", "TrainConfig",
    "build_dataclass", "config_from_dict", "derive", "flatten", "load_config", "read_yaml_mapping",
]
