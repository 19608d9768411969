"""What every artefact store shares: the competition's config and paths, its task, and the `make` line of a fix."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from compkit import tasks
from compkit.config import Config, Paths
from compkit.tasks import Task


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as the CSV bytes compkit writes (no index)."""
    return frame.to_csv(index=False).encode()


@dataclass(frozen=True)
class Store:
    """One kind of artefact of one competition's run: where its files live, their writer and their verified reader."""

    config: Config
    paths: Paths

    @property
    def task(self) -> Task:
        """The competition's task: it names the prediction files' columns and reads their labels."""
        return tasks.of(self.config.competition)

    def make(self, stages: str) -> str:
        """The command that remakes an artefact: ```make <stages> COMPETITION=<c>```."""
        return f"`make {stages} COMPETITION={self.config.competition.name}`"
