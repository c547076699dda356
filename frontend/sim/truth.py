"""The truth of a simulated project: the exact annotations of the images the simulator drew,
by image name. It is kept beside the database in ``VAR_DIR/sim/<project>.json``, written whole
or not at all, so that a later run (``crowdsim --project``) measures against it; reading it
checks that it belongs to the project."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from frontend.sim.errors import SimError
from qa.sim.crowd import Item
from tasks.models import Image, Project


@dataclass(frozen=True)
class Truth:
    """The exact annotations of a simulated project's images, by image name."""

    project_id: int
    kind: str
    images: dict[str, list[Item]]


def truth_path(project_id: int) -> Path:
    return Path(settings.VAR_DIR) / "sim" / f"{project_id}.json"


def truth_save(truth: Truth) -> Path:
    path = truth_path(truth.project_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(
        json.dumps({"project": truth.project_id, "kind": truth.kind, "images": truth.images})
    )
    os.replace(partial, path)  # readers never see half a file
    return path


def truth_load(project: Project) -> Truth:
    path = truth_path(project.pk)
    try:
        data = json.loads(path.read_text())
        truth = Truth(int(data["project"]), str(data["kind"]), dict(data["images"]))
    except FileNotFoundError:
        raise SimError(
            f"Project {project.pk} has no simulator truth ({path} is missing): only projects "
            f"created by the simulator can be simulated. Use --create KIND instead."
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SimError(f"{path} is not a simulator truth file ({exc}).") from None
    if truth.project_id != project.pk or truth.kind != project.kind:
        raise SimError(
            f"{path} belongs to a {truth.kind} project {truth.project_id}, not to this "
            f"{project.kind} project {project.pk} (was the database reset?)."
        )
    names = set(Image.objects.filter(project=project).values_list("name", flat=True))
    unknown = names - set(truth.images)
    if unknown:
        raise SimError(
            f"{len(unknown)} images of project {project.pk} are not in {path} (e.g. "
            f"{sorted(unknown)[0]!r}); the simulator knows the truth only of images it made."
        )
    return truth
