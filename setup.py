"""One build step beyond pyproject.toml: compile the message catalog (node/catalog.py).

Each ``node/translations/<locale>/LC_MESSAGES/messages.po`` becomes the
``messages.mo`` beside it: in the build directory for a wheel, or in place in the
source tree for an editable install (``pip install -e .``), as setuptools asks of
build steps. The wheel carries the ``.mo`` files, not the ``.po`` files
(``exclude-package-data``); the sdist carries the ``.po`` files (``get_source_files``).
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError, SetupError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # node.catalog compiles, as the node reads
CATALOG = Path("node", "translations")  # relative to the project root, where setuptools runs


def compile_catalog(po: Path, mo: Path, *, record_source: bool) -> None:
    """``node.catalog.compile_catalog``, its errors as setuptools' (a broken .po stops the build)."""
    try:
        import babel  # noqa: F401  (only without build isolation can it be missing)
    except ImportError as exc:
        raise SetupError(f"compiling {po} needs babel (pip install babel): {exc}") from None
    from node.catalog import CatalogError, compile_catalog as compile_one

    try:
        compile_one(po, mo, record_source=record_source)
    except CatalogError as exc:
        raise FileError(str(exc)) from None


class build_py_and_catalog(build_py):
    """``build_py``, then each ``.po`` file under node/translations compiled to its ``.mo``."""

    def run(self) -> None:
        super().run()  # in editable mode, copies nothing
        for po, mo in self._catalogs().items():
            # In place (editable), the .po stays beside the .mo: record what it was compiled from.
            compile_catalog(po, Path(mo), record_source=self.editable_mode)

    def _catalogs(self) -> dict[Path, str]:
        """Each ``.po`` file and where its ``.mo`` goes."""
        out = {}
        for po in sorted(CATALOG.glob("*/LC_MESSAGES/*.po")):
            mo = po.with_suffix(".mo")
            out[po] = str(mo if self.editable_mode else Path(self.build_lib, mo))
        return out

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if self.editable_mode:  # the keys of get_output_mapping, ours among them
            return super().get_outputs(include_bytecode)
        return [*super().get_outputs(include_bytecode), *self._catalogs().values()]

    def get_output_mapping(self) -> dict[str, str]:
        mapping = super().get_output_mapping()
        for po in self._catalogs():
            mo = po.with_suffix(".mo")
            mapping[str(Path(self.build_lib, mo))] = str(mo)
        return dict(sorted(mapping.items()))

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *map(str, self._catalogs())]


setup(cmdclass={"build_py": build_py_and_catalog})
