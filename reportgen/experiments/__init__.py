"""The practical's studies, one module each, found and registered in report order.

Each module here declares its study once (see `base.Study`); `reportgen all`, `reportgen
figures`, the report and the command line loop over `studies()`. Every module in this folder
is imported (which registers its study), so a new study is a new module here, its template
partial in templates/studies/ and its test file: nothing else changes.
"""
import importlib
import pkgutil

from .base import (STUDIES, Prepared, Study, figures_path, get_study, prepare_data,
                   register_study, registered, results_dir, studies, train_studies)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STUDIES", "Prepared", "Study", "figures_path", "get_study", "prepare_data",
           "register_study", "registered", "results_dir", "studies", "train_studies"]
