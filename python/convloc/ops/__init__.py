"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out.

One module per kernel family; every public name is re-exported here."""

from convloc.ops import boxes, crf, deconv, lattice, proposals, roi
from convloc.ops.boxes import *  # noqa: F403
from convloc.ops.crf import *  # noqa: F403
from convloc.ops.deconv import *  # noqa: F403
from convloc.ops.lattice import *  # noqa: F403
from convloc.ops.proposals import *  # noqa: F403
from convloc.ops.roi import *  # noqa: F403

__all__ = [*boxes.__all__, *crf.__all__, *deconv.__all__, *lattice.__all__, *proposals.__all__, *roi.__all__]
