"""Language-conditioned tasks of the tabletop world.

A task is named by an id (``pick_cube``) and announced to the robot by its instruction
(``"pick up the red cube"``). Instructions are matched after normalising case, whitespace and
trailing punctuation, so an operator typing "Pick up the red cube." gets the same task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    max_duration_s: float  # episode time limit in simulated seconds
    objects: tuple[str, ...] = ()  # the objects the task acts on (decides which prompts are unrelated)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("reach_cube", "reach the red cube", 6.0, ("cube",)),
        Task("press_button", "press the blue button", 6.0, ("button",)),
        Task("push_cube_to_pad", "push the red cube onto the green pad", 10.0, ("cube", "pad")),
        Task("pick_cube", "pick up the red cube", 8.0, ("cube",)),
    )
}


class UnknownTaskError(ValueError):
    """Raised for a task name or instruction that no task of the world answers to."""


def normalise_instruction(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!")


_BY_INSTRUCTION = {normalise_instruction(t.instruction): t for t in TASKS.values()}


def get_task(name_or_instruction: str) -> Task:
    """The task with this id or instruction; :class:`UnknownTaskError` lists the valid ones."""
    if name_or_instruction in TASKS:
        return TASKS[name_or_instruction]
    task = _BY_INSTRUCTION.get(normalise_instruction(name_or_instruction))
    if task is None:
        known = ", ".join(f"{t.name} ('{t.instruction}')" for t in TASKS.values())
        raise UnknownTaskError(f"unknown task or instruction '{name_or_instruction}'; expected one of: {known}")
    return task


def task_names() -> list[str]:
    return list(TASKS)


# Instructions no task of the world answers to: a progress critic learns to give them zero progress
# (VLAC's irrelevant-prompt rejection).
DISTRACTOR_INSTRUCTIONS = (
    "open the top drawer",
    "stack the blocks",
    "wipe the table with the sponge",
    "pour water into the cup",
    "fold the towel",
    "put the banana in the bowl",
)


def unrelated_instructions(task: str) -> list[str]:
    """Instructions that describe no progress of ``task``: other tasks acting on none of its objects,
    and the distractors. (Reach, push and pick all start by approaching the cube, so none of them is an
    unrelated prompt for another: their early frames do make progress on each other.)"""
    own = set(get_task(task).objects)
    return [t.instruction for t in TASKS.values() if not own & set(t.objects)] + list(DISTRACTOR_INSTRUCTIONS)
