"""``convloc data inspect``: what a dataset folder holds, in each format the pipelines read."""

from __future__ import annotations

import json

from convloc.commands import UsageError, existing_dir, output_file


def register_data(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a dataset: splits, classes, objects, identities, pairs",
        description="Prints what PATH holds in each format it is in: for a VOC detection tree, "
        "the images of each split and its objects of each class; for a VOC segmentation set, the "
        "classes and the images of each split; for LFW-format faces, the people and images of each "
        "folder of identity folders and the folds and pairs of each pairs file.",
    )
    p.add_argument("path", type=existing_dir, help="dataset folder, as given to --data")
    p.add_argument("--json", type=output_file(".json"), help="also write the summary to this JSON file")
    p.set_defaults(func=_inspect)


def _inspect(args) -> int:
    from convloc.data import lfw, voc, voc_seg
    from convloc.data.files import atomic_file

    found = {}
    try:
        found["detection"] = voc.summary(args.path)
    except FileNotFoundError:  # no Annotations/ folder
        pass
    if (segmentation := voc_seg.summary(args.path))["splits"]:
        found["segmentation"] = segmentation
    if (faces := lfw.summary(args.path))["identity_folders"] or faces["pairs"]:
        found["faces"] = faces
    if not found:
        raise UsageError(
            f"path: expected a VOC detection tree (Annotations/, ImageSets/Main/), a VOC segmentation "
            f"set (ImageSets/Segmentation/) or LFW-format identity folders in {args.path!r}, found none"
        )
    text = {"detection": _detection_text, "segmentation": _segmentation_text, "faces": _faces_text}
    print("\n\n".join(text[kind](summary) for kind, summary in found.items()))
    if args.json:
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(found, indent=2))
    return 0


def _table(rows: list[list]) -> str:
    """Rows of cells as indented text: the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(map(len, column)) for column in zip(*cells)]
    lines = [[row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))] for row in cells]
    return "\n".join(("  " + "  ".join(line)).rstrip() for line in lines)


def _detection_text(s: dict) -> str:
    splits = s["splits"]
    head = f"VOC detection tree {s['root']}: {len(s['classes'])} classes"
    if not splits:
        return head + ", no splits in ImageSets/Main"
    rows = [["", *splits], ["images", *(v["images"] for v in splits.values())]]
    for c in s["classes"]:
        rows.append([c, *(f"{v['objects'][c]} ({v['difficult'][c]})" for v in splits.values())])
    return f"{head}; objects per class (difficult ones in parentheses):\n{_table(rows)}"


def _segmentation_text(s: dict) -> str:
    rows = [["split", "images"], *([k, v] for k, v in s["splits"].items())]
    classes = f"{len(s['classes'])} classes ({', '.join(s['classes'])})"
    return f"VOC segmentation set {s['root']}: {classes}\n{_table(rows)}"


def _faces_text(s: dict) -> str:
    parts = [f"LFW-format faces {s['root']}"]
    if s["identity_folders"]:
        rows = [["identity folders", "people", "images", "people with 2+ images"]]
        for name, v in s["identity_folders"].items():
            rows.append([name, v["identities"], v["images"], v["identities_with_2_images"]])
        parts.append(_table(rows))
    pairs = {name: v for name, v in s["pairs"].items() if "error" not in v}
    if pairs:
        rows = [["pairs file", "folds", "matched", "mismatched"]]
        rows += [[name, v["folds"], v["matched"], v["mismatched"]] for name, v in pairs.items()]
        parts.append(_table(rows))
    parts += [f"  {name}: unreadable: {v['error']}" for name, v in s["pairs"].items() if "error" in v]
    return "\n".join(parts)
