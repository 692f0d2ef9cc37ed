"""The practical's studies, one module each, registered in report order.

Each module declares its study once (see `base.Study`); `reportgen all`, `reportgen figures`,
the report and the command line loop over `studies()`. A new study is a new module here
(imported below), its template partial in templates/studies/, and its test file.
"""
from .base import (STUDIES, Prepared, Study, get_study, prepare_data, register_study,
                   registered, results_dir, studies)
from . import part1, rotation, shuffle  # noqa: E402,F401  (importing a study registers it)

__all__ = ["STUDIES", "Prepared", "Study", "get_study", "prepare_data", "register_study",
           "registered", "results_dir", "studies"]
