"""What the data holds, logged before training: examples, words, entities per type, the run's tagging
scheme, and tags that break it (a warning, not an error). The longest example in sub-tokens is logged when
the splits are tokenized (nerkit.tokenization), so no split is tokenized only to be measured."""

import logging
import re
from collections import Counter

import numpy as np

from .schemes import (RULES_IN_WORDS, broken, entity_spans, flatten, label_parts, outside_scheme, split_label,
                      transition_rules)

logger = logging.getLogger(__name__)

SHOWN_BREAKS = 5
SHOWN_TAGS = 12  # the most frequent tags named in a split's line, for tags without entities (POS)


def scheme_breaks(tag_lists, label_list, scheme):
    """(example, position) of every tag that breaks the scheme: I-X after O in IOB2, B-X after O in IOB1, an
    entity left open in IOBES or BILOU, ..."""
    ids, starts = flatten(tag_lists, label_list)
    examples = np.flatnonzero([len(tags) > 0 for tags in tag_lists])  # empty examples have no tag in `ids`
    owner = examples[np.cumsum(starts) - 1] if len(ids) else np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(starts)[np.cumsum(starts) - 1] if len(ids) else owner
    return [(int(owner[k]), int(k - first[k]))
            for k in np.flatnonzero(broken(ids, starts, transition_rules(label_list, scheme)))]


def entity_counts(tag_lists):
    counts = Counter()
    for tags in tag_lists:
        counts.update(kind for kind, _, _ in entity_spans(tags))
    return counts


def tags_without_entities(split, scheme):
    """Whether a labelled split's tags name no entities (`labels_without_entities`)."""
    return split.tags is not None and labels_without_entities(split.tag_set, scheme)


def labels_without_entities(labels, scheme):
    """Whether these tags name no entities: no scheme and no entity prefixes (POS tags), which seqeval would
    still read as entities of made-up types (NNP as NP)."""
    return scheme == "none" and not any(prefix for prefix, _ in label_parts(labels))


def tag_counts(split):
    """{tag: words} of a labelled split, the most frequent first."""
    return dict(Counter(tag for tags in split.tags for tag in tags).most_common())


def tag_count_text(counts):
    """'3 tags: NN 40, VB 20, DT 10', the SHOWN_TAGS most frequent named."""
    shown = list(counts.items())
    more = f" and {len(shown) - SHOWN_TAGS} more" if len(shown) > SHOWN_TAGS else ""
    return f"{len(shown)} tags: " + ", ".join(f"{tag} {n:,}" for tag, n in shown[:SHOWN_TAGS]) + more


def describe(split, scheme=None):
    """One log line for a split: its entities per type, or for tags without entities (POS tags) the most
    frequent tags."""
    words = sum(len(tokens) for tokens in split.tokens)
    parts = [f"{split.name} ({split.source}): {len(split.tokens):,} examples, {words:,} words"]
    if tags_without_entities(split, scheme):
        parts.append(tag_count_text(tag_counts(split)))
    elif split.tags is not None:
        counts = entity_counts(split.tags)
        parts.append("entities " + (", ".join(f"{kind} {n:,}" for kind, n in counts.most_common()) or "none"))
    return "; ".join(parts)


def break_warning(split, label_list, scheme):
    """A warning text for tags that break the scheme, with the first few places; None when there are none."""
    places = [split.where_word(index, position) for index, position in scheme_breaks(split.tags or (), label_list,
                                                                                      scheme)]
    if not places:
        return None
    shown = "; ".join(places[:SHOWN_BREAKS])
    return (f"{split.name}: {len(places)} tags break the {scheme} scheme ({RULES_IN_WORDS[scheme]}), first at "
            f"{shown}. Viterbi decoding never predicts such sequences, and seqeval's default mode reads them "
            "in its own way; check the data.")


def places_of(split, labels):
    """(example, position) of every tag of a labelled split that is one of `labels`."""
    return [(index, position) for index, tags in enumerate(split.tags) for position, tag in enumerate(tags)
            if tag in labels]


def foreign_prefixes(split, scheme):
    """(example, position) of every tag of a labelled split whose prefix the scheme does not have (E-X or S-X
    among IOB2 tags: data that mixes schemes, which no break reveals, since such labels are free in the
    scheme), and the count of each such prefix; none for the scheme "none", which has no prefixes."""
    if scheme == "none":
        return [], Counter()
    # unprefixed labels are outside every scheme with prefixes, but do not mix schemes
    places = places_of(split, {label for label in outside_scheme(split.tag_set, scheme) if split_label(label)[0]})
    counts = Counter(split_label(split.tags[index][position])[0] + "-X" for index, position in places)
    return places, counts


def foreign_prefix_warning(split, scheme):
    """A warning text for tags whose prefix the scheme does not have; None when there are none."""
    if split.tags is None:
        return None
    places, counts = foreign_prefixes(split, scheme)
    if not places:
        return None
    shown = "; ".join(split.where_word(index, position) for index, position in places[:SHOWN_BREAKS])
    return (f"{split.name}: {len(places)} tags have a prefix the {scheme} scheme does not use "
            f"({', '.join(f'{prefix} {count}' for prefix, count in counts.most_common())}), first at {shown}. "
            "The data may mix tagging schemes: decoding leaves such labels free and seqeval's default mode reads "
            "them in its own way; write every file in one scheme.")


def bare_tags(split, scheme):
    """(example, position) of every tag of a labelled split that has no prefix in a scheme with prefixes, O
    aside (`o` or `DATE` among B-X and I-X tags), and the count of each such tag."""
    if scheme == "none" or split.tags is None:
        return [], Counter()
    places = places_of(split, {label for label in outside_scheme(split.tag_set, scheme) if not split_label(label)[0]})
    return places, Counter(split.tags[index][position] for index, position in places)


def seqeval_type(tag):
    """The entity type seqeval's default mode reads in a tag without a prefix it knows: the text after the
    first character (and after a hyphen there), `_` when that is empty: `o` is type `_`, `DATE` type `ATE`."""
    return tag[1:].split("-", maxsplit=1)[-1] or "_"


def bare_tag_warning(split, scheme):
    """A warning text for tags without a prefix among entity tags (`bare_tags`); None when there are none."""
    places, counts = bare_tags(split, scheme)
    if not places:
        return None
    shown = "; ".join(split.where_word(index, position) for index, position in places[:SHOWN_BREAKS])
    read_as = ", ".join(f"{tag} as {seqeval_type(tag)}" for tag in list(counts)[:4])
    return (f"{split.name}: {len(places)} tags have no entity prefix in the {scheme} scheme "
            f"({', '.join(f'{tag} {count}' for tag, count in counts.most_common())}), first at {shown}. seqeval's "
            f"default mode reads them as entities of made-up types ({read_as}) that enter the scores, and "
            "--metric_mode strict refuses them; write the outside tag as O and entity tags "
            "with their prefix (B-X, I-X).")


def log_summary(splits, label_list, scheme, source):
    for split in splits.values():
        logger.info(describe(split, scheme))
    logger.info("Tagging scheme %s, decided from %s: Viterbi decoding predicts only the label sequences it allows "
                "(%s).", scheme, source, RULES_IN_WORDS[scheme])
    if scheme == "none" and any(prefix for prefix, _ in label_parts(label_list)):
        logger.warning("The labels have entity prefixes (B-, I-, ...), but no tagging scheme fits them (decided "
                       "from %s), so Viterbi decoding allows every sequence, as argmax does; check the data.",
                       source)
    spelled = other_spelling_warning(label_list, scheme)
    if spelled:
        logger.warning(spelled)
    for split in splits.values():
        for warning in (break_warning(split, label_list, scheme), foreign_prefix_warning(split, scheme),
                        bare_tag_warning(split, scheme)):
            if warning:
                logger.warning(warning)


# Entity tags spelled in ways seqeval does not read: a lowercase prefix (b-loc, and o), the prefix after the
# type (PER-B), an underscore for the hyphen (B_PER)
OTHER_SPELLINGS = (("a lowercase prefix", re.compile(r"^[biesl]-\S+$|^o$"), "b-loc as B-loc"),
                   ("the prefix after the type", re.compile(r"^\S+-[BIESLU]$"), "PER-B as B-PER"),
                   ("an underscore after the prefix", re.compile(r"^[BIESLU]_\S+$"), "B_PER as B-PER"))


def other_spelling_warning(label_list, scheme):
    """A warning where no scheme was found but most labels are entity tags spelled another way: seqeval
    reads an uppercase prefix, then a hyphen, then the type, so these are scored as tags without a scheme
    (b-per b-per as one entity, since only a change of type ends one; an `o` before an entity as an entity
    of type `_`)."""
    if scheme != "none" or not label_list:
        return None
    for how, pattern, example in OTHER_SPELLINGS:
        matching = [label for label in label_list if pattern.match(label)]
        if len(matching) * 2 > len(label_list):
            return (f"The labels look like entity tags written with {how} ({', '.join(matching[:4])}"
                    f"{', ...' if len(matching) > 4 else ''}), which seqeval does not read as entity tags: entity "
                    "scores, Viterbi decoding and the error analysis take them as plain tags, and the entity "
                    f"F1 means little. Rename the tags in the data ({example}, the outside tag O) and train again.")
    return None
