"""Tagging schemes: which one the data follows, and which label sequences each one allows.

IOB1 (the raw CoNLL-2003 files): I-X opens and continues an entity; B-X only opens an entity right after
one of the same type. IOB2: B-X opens every entity, I-X only continues one. IOBES and BILOU also close
every entity of several words (E-X, L-X) and tag single words S-X, U-X. IOE1 and IOE2 mark the end
instead of the start: in IOE2, E-X ends every entity (a single word too) and I-X is only followed by its
entity's next word; in IOE1, I-X opens, continues and may end an entity, and E-X ends one only right
before another of the same type. "none": labels without a scheme (POS tags); every sequence is allowed.

The scheme is decided by what the tag sequences do, not by which prefixes exist: the most specific scheme
whose rules the training tags break at most rarely wins (a tag with a prefix the scheme has no use for
counting as a break), so one stray E-X in IOB2 data does not make it IOBES, and IOBES data with a few broken
entities is not IOB2. Labels outside the chosen scheme (that stray E-X, or an unprefixed tag such as X)
stay allowed everywhere: no label is ever made unreachable.
"""

import warnings
from typing import NamedTuple

import numpy as np

SCHEMES = ("IOB1", "IOB2", "IOBES", "BILOU", "IOE1", "IOE2", "none")
BARE_PREFIXES = ("B", "I", "E", "S", "L", "U")  # tags of spans without types (label_parts)
# The prefixes each scheme gives a meaning to; labels with other prefixes are free in it.
PREFIXES = {"IOB1": "BI", "IOB2": "BI", "IOBES": "BIES", "BILOU": "BILU", "IOE1": "IE", "IOE2": "IE"}
# Labels that need a label of the same type right before them: {prefix: the prefixes it may follow}.
JOINS = {"IOB1": {"B": "BI"}, "IOB2": {"I": "BI"}, "IOBES": {"I": "BI", "E": "BI"}, "BILOU": {"I": "BI", "L": "BI"},
         "IOE1": {}, "IOE2": {}}
# Labels that leave their entity open: {prefix: the prefixes of the same type that may come next}.
STAYS_OPEN = {"IOBES": {"B": "IE", "I": "IE"}, "BILOU": {"B": "IL", "I": "IL"}, "IOE1": {"E": "IE"},
              "IOE2": {"I": "IE"}}
# What a scheme needs to be seen in the data to be considered: a closing or single-word prefix.
CLOSING = {"IOBES": {"E", "S"}, "BILOU": {"L", "U"}, "IOE1": {"E"}, "IOE2": {"E"}}
# What rules a scheme out at once: IOE data has no B-X, so B-X tags with one stray E-X stay IOB.
NEVER_USED = {"IOE1": {"B"}, "IOE2": {"B"}}
# IOE1 before IOB1: IOB1's only rule is on B-X, which IOE data never has.
MOST_SPECIFIC_FIRST = ("IOBES", "BILOU", "IOE2", "IOE1", "IOB2", "IOB1")
# A scheme still fits data that breaks it at this share of the entity tags (annotation noise); the summary
# warns about every break.
TOLERANCE = 0.01
# Past that, a small data set (where one break is more than 1%) keeps the scheme it breaks least, while
# that stays under this share; data mixing IOB1 and IOB2 halves breaks both at about 30% and fits none.
NOISY = 0.2
RULES_IN_WORDS = {
    "IOB1": "B-X only right after I-X or B-X",
    "IOB2": "I-X only after B-X or I-X",
    "IOBES": "I-X and E-X only after B-X or I-X, and B-X and I-X followed by I-X or E-X",
    "BILOU": "I-X and L-X only after B-X or I-X, and B-X and I-X followed by I-X or L-X",
    "IOE1": "E-X only right before I-X or E-X",
    "IOE2": "I-X only before I-X or E-X",
    "none": "every sequence",
}


class Rules(NamedTuple):
    """allowed[i, j]: label j may follow label i; first[j]: an example may open with label j; last[i]: an
    example may end with label i."""

    allowed: np.ndarray
    first: np.ndarray
    last: np.ndarray


def split_label(label):
    """(prefix, type) of B-X, I-X, E-X, S-X, L-X and U-X; (None, label) for O and any other label."""
    prefix, dash, kind = label.partition("-")
    if dash and kind and len(prefix) == 1 and prefix in "BIESLU":
        return prefix, kind
    return None, label


def label_parts(label_list):
    """(prefix, type) of each label as `split_label` gives it, except where every label is O or a bare prefix
    letter (B, I, O: spans without types, as keyphrase extraction tags them): those letters are then
    prefixes of the one type "" (seqeval reads it as `_`). Beside other tags (a part-of-speech tag set with
    an interjection tag I) a bare letter stays a tag of its own."""
    labels = list(label_list)
    untyped = any(label != "O" for label in labels) and all(label == "O" or label in BARE_PREFIXES for label in labels)
    return [(label, "") if untyped and label != "O" else split_label(label) for label in labels]


def join_label(prefix, kind):
    """The label of `prefix` and type `kind`: I-PER, or I for the untyped spans of `label_parts`."""
    return f"{prefix}-{kind}" if kind else prefix


def transition_rules(label_list, scheme):
    """The `Rules` of `scheme` for these labels. Labels whose prefix the scheme does not use are free."""
    count = len(label_list)
    allowed = np.ones((count, count), dtype=bool)
    first, last = np.ones(count, dtype=bool), np.ones(count, dtype=bool)
    if scheme == "none":
        return Rules(allowed, first, last)
    parts = [(prefix if prefix and prefix in PREFIXES[scheme] else None, kind)
             for prefix, kind in label_parts(label_list)]
    joins, stays_open = JOINS[scheme], STAYS_OPEN.get(scheme, {})
    for j, (prefix, kind) in enumerate(parts):
        if prefix in joins:
            first[j] = False
            allowed[:, j] = [bool(before) and before in joins[prefix] and before_kind == kind
                             for before, before_kind in parts]
    for i, (prefix, kind) in enumerate(parts):
        if prefix in stays_open:
            last[i] = False
            allowed[i, :] &= [bool(after) and after in stays_open[prefix] and after_kind == kind
                              for after, after_kind in parts]
    return Rules(allowed, first, last)


def broken(ids, starts, rules):
    """Per tag, whether it breaks the rules: it may not open an example, may not follow the tag before it,
    or may not end its example. `ids` are the label ids of every example one after another, `starts` is
    True where an example begins."""
    ends = np.roll(starts, -1)  # the last tag of all ends an example too: starts[0] is True
    previous = np.roll(ids, 1)
    return ((starts & ~rules.first[ids]) | (~starts & ~rules.allowed[previous, ids])
            | (ends & ~rules.last[ids]))


def flatten(tag_lists, label_list):
    """(ids, starts) of `broken` for lists of tags."""
    index = {label: i for i, label in enumerate(label_list)}
    lengths = np.array([len(tags) for tags in tag_lists], dtype=np.int64)
    ids = np.fromiter((index[tag] for tags in tag_lists for tag in tags), dtype=np.int64, count=int(lengths.sum()))
    starts = np.zeros(len(ids), dtype=bool)
    starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    return ids, starts


def scheme_from_tags(tag_lists, label_list):
    """The scheme the tag sequences follow; None when they hold no prefixed tag to tell by."""
    prefixes = [prefix for prefix, _ in label_parts(label_list)]
    if all(prefix is None for prefix in prefixes):
        return "none"
    ids, starts = flatten(tag_lists, label_list)
    used = {prefixes[i] for i in np.unique(ids)} - {None}
    if not used:
        return None
    entity_tags = np.array([prefix is not None for prefix in prefixes])[ids].sum()
    breaks, misfits = {}, {}
    for scheme in MOST_SPECIFIC_FIRST:
        if scheme in CLOSING and not used & CLOSING[scheme] or used & NEVER_USED.get(scheme, set()):
            continue
        breaks[scheme] = broken(ids, starts, transition_rules(label_list, scheme)).sum()
        # tags whose prefix the scheme has no use for count against it too: else IOBES data with a few
        # broken entities would fit IOB2, where its E-X and S-X are free labels that break nothing
        foreign = np.array([prefix is not None and prefix not in PREFIXES[scheme] for prefix in prefixes])[ids]
        misfits[scheme] = breaks[scheme] + foreign.sum()
        if misfits[scheme] <= TOLERANCE * entity_tags:
            return scheme
    # Small or noisy data: the scheme it fits best (of two alike, the one it breaks least: IOB2 for data that
    # mixes IOB2 and IOBES), unless it breaks every scheme often (then none fits).
    fewest = min(misfits, key=lambda scheme: (misfits[scheme], breaks[scheme]))
    return fewest if breaks[fewest] <= NOISY * entity_tags else "none"


def scheme_from_names(label_list):
    """The scheme the label names suggest, when there are no tags to look at (a model's labels alone)."""
    used = {prefix for prefix, _ in label_parts(label_list)} - {None}
    if not used:
        return "none"
    if used <= set(PREFIXES["IOB2"]):
        return "IOB2" if "B" in used else "IOB1"  # I-X alone: IOB1, where B-X is rare
    for scheme in ("IOE2", "IOBES", "BILOU"):  # I-X and E-X alone: IOE2, the usual one of the IOE two
        if used <= set(PREFIXES[scheme]):
            return scheme
    return "none"


def decide_scheme(splits, label_list, saved=None):
    """(scheme, where it was decided) for a run: the training tags, else the scheme saved with the model
    (`saved`), else the validation or test tags, else the label names."""
    train = splits.get("train")
    if train is not None and train.tags:
        found = scheme_from_tags(train.tags, label_list)
        if found:
            return found, "the training tags"
    if saved in SCHEMES:
        return saved, "the model's config.json"
    for name in ("validation", "test"):
        split = splits.get(name)
        if split is not None and split.tags:
            found = scheme_from_tags(split.tags, label_list)
            if found:
                return found, f"the {name} tags"
    return scheme_from_names(label_list), "the label names"


def saved_scheme(config):
    """The scheme nerkit saved in a trained model's config (`tagging_scheme`), or None."""
    scheme = getattr(config, "tagging_scheme", None)
    return scheme if scheme in SCHEMES else None


def model_scheme(config):
    """The scheme to decode a model's output with: the one saved with it, else its label names'."""
    return saved_scheme(config) or scheme_from_names([config.id2label[i] for i in sorted(config.id2label)])


def outside_scheme(label_list, scheme):
    """Labels other than O that the scheme gives no meaning to (all of them for "none")."""
    own = tuple(PREFIXES.get(scheme, ""))
    return [label for label, (prefix, _) in zip(label_list, label_parts(label_list))
            if label != "O" and prefix not in own]


# seqeval's lenient reader (get_entities, the default metric mode) knows the prefixes B, I, E and S but not
# BILOU's L and U: it reads "U-LOC U-LOC" as one entity and "B-LOC L-LOC U-LOC" as one. BILOU tags are given
# to it in their IOBES spelling, the same entities in letters it knows.
IOBES_SPELLING = {"L": "E", "U": "S"}
# It also warns once per entity whose tag has no prefix it knows: tens of lines a run on plain tags (POS,
# chunk labels without B-/I-), which the run's summary already names as a tagging scheme of their own.
warnings.filterwarnings("ignore", message=r".* seems not to be NE tag\.$", category=UserWarning)


def ioe1_as_ioe2(tags):
    """One IOE1 tag sequence written in IOE2, entity for entity, for seqeval's strict reader: its IOE1 rules
    lose a one-word entity E-X that opens a sentence or follows O (no start pattern matches it). In IOE2
    every entity ends with E-X, so I-X becomes E-X where its entity ends (the next tag is not I-X or E-X of
    its type). An E-X that IOE1 allows (right before I-X or E-X of its type) stays; one it does not becomes
    I-X, which IOE2 does not let an entity end with either, so strict mode still drops that entity."""
    written = []
    for tag, following in zip(tags, list(tags[1:]) + ["O"]):
        # strict mode has checked the labels against IOE1: a bare I or E is an untyped span's (label_parts)
        prefix, kind = (tag, "") if tag in ("I", "E") else split_label(tag)
        next_prefix, next_kind = (following, "") if following in ("I", "E") else split_label(following)
        continued = next_prefix in ("I", "E") and next_kind == kind
        if prefix == "I":
            written.append(tag if continued else join_label("E", kind))
        elif prefix == "E":
            written.append(tag if continued else join_label("I", kind))
        else:
            written.append(tag)
    return written


def iobes_spelling(tags):
    """One tag sequence with L-X written E-X and U-X written S-X; every other tag as it is."""
    return [IOBES_SPELLING[tag[0]] + tag[1:] if tag[:2] in ("L-", "U-") and len(tag) > 2 else tag for tag in tags]


def entity_spans(tags):
    """(type, first word, last word) of each entity of one tag sequence, read as the default metric mode
    reads it (seqeval's lenient reader, BILOU included)."""
    # imported here: seqeval brings scikit-learn (1.4 s), which `python -m nerkit.embedded` does not need
    from seqeval.metrics.sequence_labeling import get_entities

    return get_entities(iobes_spelling(list(tags)))
