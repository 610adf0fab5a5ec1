"""--check_data: is the data sound? A report on every split given, before any training.

    report = data_report(splits, subtoken_lengths_per_split, WindowPlan(max_length, special_tokens, stride))

Per split: examples, words, entities per type, the tagging scheme, examples that need more than one window,
entity lengths in words and sub-tokens, scheme breaks, words the tokenizer turns into nothing. Across
splits: validation/test examples also in train (leakage), entities never seen in train (unseen entity
ratio), surface forms annotated in more than one way, labels never seen in train. Everything here but
`subtoken_lengths` and `check_data` is a pure function of plain lists, so tests feed hand-made data.
"""

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass

from .error_analysis import entity_spans
from .errors import UserError
from .schemes import RULES_IN_WORDS, decide_scheme, scheme_from_tags
from .outputs import write_json
from .summary import (bare_tags, entity_counts, foreign_prefixes, other_spelling_warning, scheme_breaks,
                      seqeval_type, tag_count_text, tag_counts, tags_without_entities)
from .tokenization import example_windows, load_fast_tokenizer, window_length, word_lengths_from_ids

logger = logging.getLogger(__name__)

SHOWN_PLACES = 5  # places listed for each finding (leakage, scheme breaks, empty words)
LONGEST_FORM = 4  # inconsistent annotation looks at surface forms of 1 to 4 words
SHOWN_FORMS = 100  # inconsistent surface forms kept in data_report.json, most frequent first
EVALUATED = ("validation", "test")


@dataclass
class WindowPlan:
    """How examples become windows: the window in sub-tokens, the special tokens it holds, the stride."""

    max_length: int
    special_tokens: int
    stride: int

    @property
    def overlap(self):
        """The stride windows really overlap by: at most half a window (see `example_windows`)."""
        return min(self.stride, (self.max_length - self.special_tokens) // 2)


def tag_scheme(tag_lists):
    """The tagging scheme a split's tag sequences follow (nerkit.schemes), "none" when no tag tells."""
    return scheme_from_tags(tag_lists, sorted({tag for tags in tag_lists for tag in tags})) or "none"


def entities_of(tokens, tags):
    """[(type, start, end exclusive, surface form as a tuple of words)] of one example, seqeval's reading."""
    return [(span.type, span.start, span.end, tuple(tokens[span.start:span.end]))
            for span in entity_spans([tags], [])[0]]


def length_stats(lengths):
    """{"mean", "max", "counts": [[length, entities], ...] shortest first} of a list of entity lengths (None
    when empty). Pairs, not a dict, so the JSON keeps them in order."""
    if not lengths:
        return None
    counts = Counter(lengths)
    return {"mean": round(sum(lengths) / len(lengths), 3), "max": max(lengths),
            "counts": [[length, counts[length]] for length in sorted(counts)]}


def window_counts(lengths, plan):
    """Examples that need more than one window, the words in them, all windows, and words longer than a
    window on their own (the tokenizer cuts those), exactly as nerkit.tokenization encodes them."""
    long_examples = words_in_long = windows = too_long = 0
    budget = plan.max_length - plan.special_tokens
    for word_lengths in lengths:
        count = len(example_windows(word_lengths, plan.max_length, plan.special_tokens, plan.stride))
        windows += count
        if count > 1:
            long_examples += 1
            words_in_long += len(word_lengths)
        too_long += sum(length > budget for length in word_lengths)
    return {"long_examples": long_examples, "words_in_long_examples": words_in_long, "windows": windows,
            "words_longer_than_window": too_long}


def empty_words(split, lengths):
    """Words the tokenizer turns into no sub-token at all: count, their forms, and the first places."""
    places, forms = [], Counter()
    for index, word_lengths in enumerate(lengths):
        for position, length in enumerate(word_lengths):
            if length == 0:
                places.append(split.where_word(index, position))
                forms[split.tokens[index][position]] += 1
    return {"count": len(places), "forms": [form for form, _ in forms.most_common(SHOWN_PLACES)],
            "first": places[:SHOWN_PLACES]}


def split_report(split, lengths, plan, scheme=None):
    """The figures of one split; `lengths` holds the sub-tokens of every word of every example. Tags without
    entities (POS tags, under the run's `scheme` none) are counted per tag instead of as entities."""
    report = {"source": split.source, "examples": len(split.tokens),
              "words": sum(len(tokens) for tokens in split.tokens), "labelled": split.tags is not None,
              "longest_example": max(sum(word_lengths) for word_lengths in lengths) + plan.special_tokens}
    report.update(window_counts(lengths, plan))
    report["empty_words"] = empty_words(split, lengths)
    if tags_without_entities(split, scheme):
        report.update(tags=tag_counts(split), scheme=None)
    elif split.tags is not None:
        words, subtokens = [], []
        for tokens, tags, word_lengths in zip(split.tokens, split.tags, lengths):
            for _, start, end, _ in entities_of(tokens, tags):
                words.append(end - start)
                subtokens.append(sum(word_lengths[start:end]))
        report.update(entities=dict(entity_counts(split.tags).most_common()), entity_total=len(words),
                      scheme=tag_scheme(split.tags), entity_length_words=length_stats(words),
                      entity_length_subtokens=length_stats(subtokens))
    return report


def leakage(splits):
    """Validation and test examples whose word sequence also occurs in train: count and first places."""
    if "train" not in splits:
        return {}
    train = splits["train"]
    first_in_train = {}
    for index, tokens in enumerate(train.tokens):
        first_in_train.setdefault(tuple(tokens), index)
    found = {}
    for name in EVALUATED:
        if name not in splits:
            continue
        split = splits[name]
        places = [f"{split.where(index)} = {train.where(first_in_train[tuple(tokens)])}"
                  for index, tokens in enumerate(split.tokens) if tuple(tokens) in first_in_train]
        found[name] = {"count": len(places), "examples": len(split.tokens), "first": places[:SHOWN_PLACES]}
    return found


def ratio(part, whole):
    return round(part / whole, 4) if whole else None


def unseen_entities(splits):
    """Per labelled validation/test split: the share of its entities whose surface form never occurs as an
    entity of that type in train, overall and per type."""
    train = splits.get("train")
    if train is None or train.tags is None:
        return {}
    known = {(kind, form) for tokens, tags in zip(train.tokens, train.tags)
             for kind, _, _, form in entities_of(tokens, tags)}
    found = {}
    for name in EVALUATED:
        split = splits.get(name)
        if split is None or split.tags is None:
            continue
        total, unseen = Counter(), Counter()
        for tokens, tags in zip(split.tokens, split.tags):
            for kind, _, _, form in entities_of(tokens, tags):
                total[kind] += 1
                unseen[kind] += (kind, form) not in known
        found[name] = {"entities": sum(total.values()), "unseen": sum(unseen.values()),
                       "ratio": ratio(sum(unseen.values()), sum(total.values())),
                       "per_type": {kind: {"entities": total[kind], "unseen": unseen[kind],
                                           "ratio": ratio(unseen[kind], total[kind])} for kind in sorted(total)}}
    return found


def labellings(tokens, tags, forms):
    """(form, label) for every occurrence in one example of a surface form in `forms`: the entity type
    when exactly those words are an entity, "O" when none of them is in an entity. An occurrence inside
    or across a longer entity is neither, and is not counted."""
    entities = {(start, end): kind for kind, start, end, _ in entities_of(tokens, tags)}
    found = []
    for size in range(1, LONGEST_FORM + 1):
        for start in range(len(tokens) - size + 1):
            form = tuple(tokens[start:start + size])
            if form not in forms:
                continue
            if (start, start + size) in entities:
                found.append((form, entities[(start, start + size)]))
            elif all(tag == "O" for tag in tags[start:start + size]):
                found.append((form, "O"))
    return found


def inconsistent_annotations(splits, entities=True):
    """Surface forms of 1-4 words labelled in more than one way (another type, or not an entity) across
    every labelled split, most frequent first: the usual sign of annotation errors. For tags that name no
    entities (`entities` False: POS tags), single words given more than one tag, with the tags themselves;
    seqeval would read made-up entities in them (NN as N, VBP as BP)."""
    labelled = [split for split in splits.values() if split.tags is not None]
    counts = defaultdict(Counter)
    if entities:
        forms = {form for split in labelled for tokens, tags in zip(split.tokens, split.tags)
                 for _, start, end, form in entities_of(tokens, tags) if end - start <= LONGEST_FORM}
        for split in labelled:
            for tokens, tags in zip(split.tokens, split.tags):
                for form, label in labellings(tokens, tags, forms):
                    counts[form][label] += 1
    else:
        for split in labelled:
            for tokens, tags in zip(split.tokens, split.tags):
                for word, tag in zip(tokens, tags):
                    counts[(word,)][tag] += 1
    mixed = [(form, labels) for form, labels in counts.items() if len(labels) > 1]
    mixed.sort(key=lambda item: (-sum(item[1].values()), " ".join(item[0])))
    return {"count": len(mixed), "forms": [  # labels as [label, count] pairs, most frequent first
        {"text": " ".join(form), "occurrences": sum(labels.values()), "labels": [list(pair) for pair in
                                                                                  labels.most_common()]}
        for form, labels in mixed[:SHOWN_FORMS]]}


def labels_not_in_train(splits):
    """Per labelled validation/test split, the tags it uses that train never does."""
    train = splits.get("train")
    if train is None or train.tags is None:
        return {}
    return {name: sorted(splits[name].tag_set - train.tag_set)
            for name in EVALUATED if name in splits and splits[name].tags is not None}


def run_scheme(splits):
    """(the run's tagging scheme, the labels of every split): the scheme training would decide (see
    nerkit.schemes.decide_scheme), which scheme breaks are counted against."""
    label_list = sorted(set().union(*(split.tag_set or () for split in splits.values())))
    return decide_scheme(splits, label_list)[0], label_list


def scheme_break_report(splits):
    """Per labelled split: tags that break the run's scheme (I-X after O in IOB2, ...), count and places,
    and tags whose prefix the scheme does not have (E-X in IOB2 data), count per prefix and places."""
    scheme, label_list = run_scheme(splits)
    found = {}
    for name, split in splits.items():
        if split.tags is None:
            continue
        places = [split.where_word(index, position) for index, position in scheme_breaks(split.tags, label_list,
                                                                                          scheme)]
        foreign, prefixes = foreign_prefixes(split, scheme)
        bare, bare_counts = bare_tags(split, scheme)
        found[name] = {"count": len(places), "first": places[:SHOWN_PLACES],
                       "outside_scheme": {"count": len(foreign), "prefixes": dict(prefixes),
                                          "first": [split.where_word(*place) for place in foreign[:SHOWN_PLACES]]},
                       "without_prefix": {"count": len(bare), "tags": dict(bare_counts.most_common()),
                                          "first": [split.where_word(*place) for place in bare[:SHOWN_PLACES]]}}
    return found


def data_report(splits, lengths, plan):
    """The whole report (data_report.json). `splits` maps a name to a `nerkit.data.Split`, `lengths` a name
    to the sub-tokens of each word of each example (see `subtoken_lengths`)."""
    scheme, label_list = run_scheme(splits)
    entities = not any(tags_without_entities(split, scheme) for split in splits.values())
    return {
        "max_length": plan.max_length,
        "stride": plan.overlap,
        "scheme": scheme,
        "splits": {name: split_report(split, lengths[name], plan, scheme) for name, split in splits.items()},
        "leakage": leakage(splits),
        "unseen_entity_ratio": unseen_entities(splits) if entities else {},  # none for POS tags
        "inconsistent_annotations": inconsistent_annotations(splits, entities),
        "labels_not_in_train": labels_not_in_train(splits),
        "scheme_breaks": scheme_break_report(splits),
        "label_spelling": other_spelling_warning(label_list, scheme),
    }


def split_lines(name, report):
    """The readable lines of one split."""
    parts = [f"{name} ({report['source']}): {report['examples']:,} examples, {report['words']:,} words"]
    if report["labelled"] and "tags" in report:
        parts.append(tag_count_text(report["tags"]))
    elif report["labelled"]:
        entities = ", ".join(f"{kind} {count:,}" for kind, count in report["entities"].items()) or "none"
        parts += [f"entities {entities}", f"scheme {report['scheme'] or 'none detected'}"]
    parts.append(f"longest example {report['longest_example']:,} sub-tokens")
    lines = ["; ".join(parts)]
    lines.append(f"  windows: {report['windows']:,}; examples that need more than one: {report['long_examples']:,} "
                 f"({report['words_in_long_examples']:,} words); words longer than a window on their own (cut by "
                 f"the tokenizer): {report['words_longer_than_window']:,}")
    words, subtokens = report.get("entity_length_words"), report.get("entity_length_subtokens")
    if words:
        lines.append(f"  entity length: mean {words['mean']} words (max {words['max']}), mean {subtokens['mean']} "
                     f"sub-tokens (max {subtokens['max']})")
    empty = report["empty_words"]
    if empty["count"]:
        lines.append(f"  {empty['count']:,} words the tokenizer turns into nothing (predicted O, inside an entity "
                     f"its inside label): {', '.join(repr(form) for form in empty['forms'])}; first at "
                     f"{'; '.join(empty['first'])}")
    return lines


def finding_lines(report):
    """The readable lines of the findings across splits."""
    lines = []
    for name, found in report["leakage"].items():
        lines.append(f"leakage: {found['count']:,} of {found['examples']:,} {name} examples also occur in train"
                     + (f", first {'; '.join(found['first'])}" if found["first"] else ""))
    for name, found in report["unseen_entity_ratio"].items():
        per_type = ", ".join(f"{kind} {values['unseen']}/{values['entities']}"
                             for kind, values in found["per_type"].items())
        shown = "n/a" if found["ratio"] is None else f"{found['ratio']:.1%}"
        lines.append(f"unseen entities: {shown} of {name} entities ({found['unseen']:,} of {found['entities']:,}) "
                     f"never occur as an entity of that type in train ({per_type})")
    inconsistent = report["inconsistent_annotations"]
    lines.append(f"inconsistent annotation: {inconsistent['count']:,} surface forms labelled in more than one way"
                 + (", most frequent first:" if inconsistent["count"] else ""))
    for form in inconsistent["forms"][:10]:
        labels = ", ".join(f"{label} {count}" for label, count in form["labels"])
        lines.append(f"  {form['text']!r}: {labels}")
    for name, labels in report["labels_not_in_train"].items():
        lines.append(f"labels in {name} but never in train: {', '.join(labels) or 'none'}")
    for name, found in report["scheme_breaks"].items():
        lines.append(f"scheme breaks in {name}: " + (f"{found['count']:,} (the run's scheme is {report['scheme']}: "
                     f"{RULES_IN_WORDS[report['scheme']]}), first at {'; '.join(found['first'])}"
                     if found["count"] else "none"))
        outside = found["outside_scheme"]
        if outside["count"]:
            lines.append(f"tags outside the {report['scheme']} scheme in {name} (mixed schemes?): "
                         f"{outside['count']:,} ({', '.join(f'{p} {n}' for p, n in outside['prefixes'].items())}), "
                         f"first at {'; '.join(outside['first'])}")
        bare = found["without_prefix"]
        if bare["count"]:
            lines.append(f"tags without an entity prefix in {name} (seqeval scores them as entities of made-up "
                         f"types: {', '.join(f'{tag} as {seqeval_type(tag)}' for tag in bare['tags'])}): "
                         f"{bare['count']:,} ({', '.join(f'{t} {n}' for t, n in bare['tags'].items())}), "
                         f"first at {'; '.join(bare['first'])}")
    if report["label_spelling"]:
        lines.append(f"label spelling: {report['label_spelling']}")
    if not any(split["empty_words"]["count"] for split in report["splits"].values()):
        lines.append("words the tokenizer turns into nothing: none")
    return lines


def report_text(report):
    """The report as a person reads it."""
    lines = [f"Data report (windows of {report['max_length']} sub-tokens, stride {report['stride']})"]
    for name, split in report["splits"].items():
        lines += split_lines(name, split)
    return "\n".join(lines + finding_lines(report))


def subtoken_lengths(tokenizer, token_lists, chunk=1000):
    """Sub-tokens of every word of every example (0 for a word the tokenizer turns into nothing)."""
    lengths = []
    for start in range(0, len(token_lists), chunk):
        batch = token_lists[start:start + chunk]
        encoded = tokenizer(batch, is_split_into_words=True, truncation=False, verbose=False)
        lengths += [word_lengths_from_ids(encoded.word_ids(index), len(words)) for index, words in enumerate(batch)]
    return lengths


def check_data(model_args, data_args, output_dir, requested_length, flag, main_process=True):
    """--check_data: read every split given, load the tokenizer and config (no weights), print the report
    and write data_report.json into `output_dir`. Findings are not errors; only what stops any run (a
    missing file, a bad flag) raises a UserError. Only data_report.json is written, so any folder will do."""
    from .data import load_splits
    from .modeling import load_config

    if output_dir is None:
        raise UserError("Give --output_dir: the folder for data_report.json.")
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is None:
        raise UserError("--check_data needs a tokenizer: give --model_name_or_path or --tokenizer_name.")
    splits, _ = load_splits(data_args, model_args.cache_dir, model_args.token)
    tokenizer = load_fast_tokenizer(name, model_args.hub_kwargs())
    config = load_config(model_args, data_args.task_name)
    max_length = window_length(tokenizer, config, requested_length, flag)
    plan = WindowPlan(max_length, tokenizer.num_special_tokens_to_add(), data_args.stride)
    lengths = {split_name: subtoken_lengths(tokenizer, split.tokens) for split_name, split in splits.items()}
    report = dict(data_report(splits, lengths, plan), tokenizer=name)
    if main_process:
        print(report_text(report), flush=True)
        path = os.path.join(output_dir, "data_report.json")
        write_json(path, report)
        logger.info("Wrote %s", path)
    return report
