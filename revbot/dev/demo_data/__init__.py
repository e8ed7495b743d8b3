"""The demo's embedded sample project (generated, deterministic); see ``sample.py``."""

from revbot.dev.demo_data.sample import (  # noqa: F401
    REPO,
    SampleProject,
    SamplePull,
    build_demo_pull,
    build_sample_project,
    habits_in,
)
from revbot.dev.demo_data.templates import STYLE  # noqa: F401
