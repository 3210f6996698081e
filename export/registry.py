"""Every family's recipes by model name, the models served by default, and the lookup of a user's own generator.

A family is one module, named like its handlers folder: ``export/<family>.py`` holds its architectures, its config
(typed, from ``handlers/<family>/schema.py``) and its ``RECIPES``.
"""

from types import ModuleType

from . import (
    detection,
    faces,
    generators,
    keypoint_rcnn,
    pose,
    pose_blazepose,
    pose_pipeline,
    pose_tracker,
    segmentation,
    smart_filter,
    style,
)
from .generators import GENERATORS_FILE, generator_recipe, own_generator_recipe
from .recipe import Recipe

FAMILIES: dict[str, ModuleType] = {
    module.__name__.rpartition(".")[2]: module
    for module in (
        pose,
        pose_blazepose,
        detection,
        keypoint_rcnn,
        pose_pipeline,
        pose_tracker,
        segmentation,
        faces,
        smart_filter,
        style,
        generators,
    )
}
RECIPES: dict[str, Recipe] = {recipe.name: recipe for family in FAMILIES.values() for recipe in family.RECIPES}
DEFAULT_MODELS = [name for name, recipe in RECIPES.items() if recipe.served_by_default]

__all__ = ["DEFAULT_MODELS", "FAMILIES", "GENERATORS_FILE", "RECIPES", "generator_recipe", "recipe_named"]


def recipe_named(name: str) -> Recipe:
    """The recipe of ``name``: a listed model, or a user's own generator named after its family (``cyclegan_*``,
    ``pix2pix_*``); ``KeyError`` else."""
    if name in RECIPES:
        return RECIPES[name]
    recipe = own_generator_recipe(name)
    if recipe is None:
        raise KeyError(name)
    return recipe
