"""What the data holds, logged before training: examples, words, entities per type, the tagging scheme,
and tags that break the scheme (a warning, not an error). The longest example in sub-tokens is logged
when the splits are tokenized (nerkit.tokenization), so no split is tokenized only to be measured."""

import logging
from collections import Counter

from seqeval.metrics.sequence_labeling import get_entities

from .metrics import detect_scheme

logger = logging.getLogger(__name__)

CONTINUING = ("I-", "E-", "L-")  # prefixes that continue an entity opened by B- (or I-)
SHOWN_BREAKS = 5


def scheme_breaks(tags):
    """Positions of tags that continue an entity that is not open: I-X (E-X, L-X) at the start, after O,
    after an entity's end, or after a tag of another type."""
    breaks, previous = [], "O"
    for position, tag in enumerate(tags):
        if tag[:2] in CONTINUING and (previous[:2] not in ("B-", "I-") or previous[2:] != tag[2:]):
            breaks.append(position)
        previous = tag
    return breaks


def entity_counts(tag_lists):
    counts = Counter()
    for tags in tag_lists:
        counts.update(kind for kind, _, _ in get_entities(tags))
    return counts


def describe(split):
    """One log line for a split."""
    words = sum(len(tokens) for tokens in split.tokens)
    parts = [f"{split.name} ({split.source}): {len(split.tokens):,} examples, {words:,} words"]
    if split.tags is not None:
        counts = entity_counts(split.tags)
        parts.append("entities " + (", ".join(f"{kind} {n:,}" for kind, n in counts.most_common()) or "none"))
        labels = sorted({tag for tags in split.tags for tag in tags})
        parts.append(f"scheme {detect_scheme(labels) or 'none detected'}")
    return "; ".join(parts)


def break_warning(split):
    """A warning text for tags that break the scheme, with the first few places; None when there are none."""
    places = [split.where_word(index, position) for index, tags in enumerate(split.tags or ())
              for position in scheme_breaks(tags)]
    if not places:
        return None
    shown = "; ".join(places[:SHOWN_BREAKS])
    return (f"{split.name}: {len(places)} tags continue an entity that is not open (I-X after O or after another "
            f"type), first at {shown}. seqeval's default mode reads them as entity starts; check the data.")


def log_summary(splits):
    for split in splits.values():
        logger.info(describe(split))
        warning = break_warning(split)
        if warning:
            logger.warning(warning)
