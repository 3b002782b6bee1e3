"""How each op type carries a channel axis from one of its tensors to the others (op specs).

A *site* says where a group's units live in one tensor: along ``axis`` (negative, counted from
the right, so that broadcasting lines up), unit ``u`` owns the indices
``[offset + u * block, offset + (u + 1) * block)``. ``block`` > 1 appears after a Flatten
(channel ``c`` of NCHW owns ``H * W`` columns) or for attention heads (one head owns
``head_dim`` channels of the projection).

An op spec is one function ``spec(ctx, node, port, site) -> links``: given that the tensor at
``port`` of ``node`` carries ``site``, it returns the sites of the node's other tensors that must
drop the same units, plus edits of integer constants / attributes that hold the channel count
(Reshape targets, Split sizes, a depthwise Conv's ``group``). It raises ``Freeze`` when the op
reads the channel axis in a way that removal would change (normalising over it, a contraction
between two activations, no spec at all), and ``Coarsen`` when the units must be merged to map
(a Reshape that splits channels into heads). Adding an op type is one ``@op_spec`` entry; the
grouping code in ``groups.py`` never names op types.
"""

# The rule modules register their op specs on import.
from . import contractions, elementwise, pieces, reshape
from .base import (
    CONTRACTING,
    OP_SPECS,
    AttrEdit,
    Coarsen,
    CountEdit,
    Freeze,
    Link,
    OpSpec,
    Port,
    Site,
    SpecContext,
    attr,
    op_spec,
)

__all__ = [
    "CONTRACTING",
    "OP_SPECS",
    "AttrEdit",
    "Coarsen",
    "CountEdit",
    "Freeze",
    "Link",
    "OpSpec",
    "Port",
    "Site",
    "SpecContext",
    "attr",
    "contractions",
    "elementwise",
    "op_spec",
    "pieces",
    "reshape",
]
