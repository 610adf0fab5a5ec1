"""What kind of mistakes a model makes: every gold and predicted entity of a split in one category.

    analysis = analyse_errors(tokens, gold_tags, predicted_tags, label_list, mode)
    analysis["counts"]  # {"correct": 80, "wrong_type": 5, "wrong_boundary": 10, ...}

Tags that name no entities (POS tags) are analysed word by word instead (`analyse_tag_errors`): words per
tag tagged right and wrong, and which tag was given instead.

The categories (the SemEval-2013 task 9 scenarios that nervaluate's documentation describes):
- correct: same span and type as a gold entity;
- wrong_type: same span, another type;
- wrong_boundary: overlaps a gold entity of the same type, with another span;
- wrong_boundary_and_type: overlaps gold entities of other types only, with another span;
- missed: a gold entity no prediction overlaps;
- spurious: a prediction that overlaps no gold entity.

Each gold entity gets exactly one of the first five (by the predictions that overlap it), so they add up to
the gold count; each predicted entity likewise gets one of correct, wrong_type, wrong_boundary,
wrong_boundary_and_type or spurious (by the gold entities that overlap it), which add up to the predicted
count. A gold entity split into two predictions is one wrong_boundary on the gold side and two on the
predicted side; `counts` reports the gold side plus spurious, `predicted_counts` the predicted side.

Why not nervaluate (1.2, not a requirement): it has no single partition into these six categories. Each of its
strategies (strict, exact, partial, ent_type) gives its own correct/incorrect/partial/missed/spurious,
matching greedily prediction by prediction, so a gold entity overlapped by two predictions makes the second
one "spurious" although it overlaps gold, and combining the strategies does not give one consistent
category per entity. Its spans also come from its own reader, not seqeval's, so "correct" would not be
seqeval's true positives. The matching here is a few lines on seqeval's own entities, which makes
correct == seqeval's true positives in either metric mode by construction.
"""

from collections import Counter, namedtuple

from seqeval.scheme import Entities

from .metrics import strict_reading, strict_scheme
from .schemes import entity_spans as lenient_spans

CATEGORIES = ("correct", "wrong_type", "wrong_boundary", "wrong_boundary_and_type", "missed", "spurious")
PREDICTED_CATEGORIES = CATEGORIES[:4] + ("spurious",)  # each predicted entity is in one of these
TITLES = {"correct": "correct", "wrong_type": "wrong type", "wrong_boundary": "wrong boundary",
          "wrong_boundary_and_type": "wrong boundary and type", "missed": "missed", "spurious": "spurious"}
SHOWN_EXAMPLES = 20
SHOWN_PER_CONFUSION = 5  # examples of each of the SHOWN_EXAMPLES most frequent tag confusions
SHOWN_WORST_TAGS = 10  # tags with most wrong words named in the log's summary of a word-by-word analysis
CONTEXT_WORDS = 5  # words shown on each side of the entities of an example

Span = namedtuple("Span", "type start end")  # word indices, end exclusive


def entity_spans(tag_lists, label_list, mode="default", scheme=None):
    """Entities per example exactly as seqeval reads them in `mode`: its lenient `get_entities` in the
    default mode, its scheme-checked `Entities` in strict mode (in the run's `scheme`)."""
    scheme = strict_scheme(label_list, mode, scheme)
    if scheme is not None:
        read, seqeval_scheme = strict_reading(tag_lists, scheme)
        return [[Span(entity.tag, entity.start, entity.end) for entity in sentence]
                for sentence in Entities(read, seqeval_scheme).entities]
    return [[Span(kind, start, end + 1) for kind, start, end in lenient_spans(tags)] for tags in tag_lists]


def overlaps(first, second):
    return first.start < second.end and second.start < first.end


def category(entity, others, alone):
    """The category of `entity` given the entities of the other side that overlap it (`others`); `alone`
    names the case where nothing overlaps ("missed" for gold, "spurious" for a prediction). Entities of
    one side never overlap each other, so a same-span match is the only overlapping entity."""
    if not others:
        return alone
    if any((other.start, other.end) == (entity.start, entity.end) for other in others):
        return "correct" if others[0].type == entity.type else "wrong_type"
    return "wrong_boundary" if any(other.type == entity.type for other in others) else "wrong_boundary_and_type"


def classify_example(gold, predicted):
    """([(category, gold span, overlapping predictions)], [(category, predicted span, overlapping gold)])."""
    gold_side = []
    for entity in gold:
        others = [span for span in predicted if overlaps(entity, span)]
        gold_side.append((category(entity, others, "missed"), entity, others))
    predicted_side = []
    for entity in predicted:
        others = [span for span in gold if overlaps(entity, span)]
        predicted_side.append((category(entity, others, "spurious"), entity, others))
    return gold_side, predicted_side


def span_record(tokens, span):
    """An entity as predictions.jsonl writes it: type, start, end (exclusive), text."""
    return {"type": span.type, "start": span.start, "end": span.end, "text": " ".join(tokens[span.start:span.end])}


def example_record(index, tokens, gold, predicted, where=None):
    """One shown example: where its first entity is (`where(example, word)` names the place), the words
    around its entities, and the gold and predicted spans."""
    spans = [*gold, *predicted]
    first = max(min(span.start for span in spans) - CONTEXT_WORDS, 0)
    last = min(max(span.end for span in spans) + CONTEXT_WORDS, len(tokens))
    record = {"example": index}
    if where is not None:
        record["where"] = where(index, spans[0].start)
    record.update(context=" ".join(tokens[first:last]), context_start=first,
                  gold=[span_record(tokens, span) for span in gold],
                  predicted=[span_record(tokens, span) for span in predicted])
    return record


def empty_tally():
    return {"gold_entities": 0, "predicted_entities": 0, "counts": dict.fromkeys(CATEGORIES, 0),
            "predicted_counts": dict.fromkeys(PREDICTED_CATEGORIES, 0)}


def analyse_errors(tokens, gold_tags, predicted_tags, label_list, mode="default", where=None,
                   shown=SHOWN_EXAMPLES, scheme=None):
    """The error analysis of a split (the content of errors_<split>.json, see the README).

    `tokens`, `gold_tags`, `predicted_tags` are lists per example (`tokens` may be None when `shown` is 0:
    no examples are kept); `where(example, word)` optionally names a word's place ("test.conll, line 12",
    as `Split.where_word` does) for the shown examples; `mode` is the seqeval metric mode and `scheme` the
    run's tagging scheme (strict mode reads entities in it)."""
    overall, per_type, confusions = empty_tally(), {}, Counter()
    examples = {name: [] for name in CATEGORIES}
    gold_spans = entity_spans(gold_tags, label_list, mode, scheme)
    predicted_spans = entity_spans(predicted_tags, label_list, mode, scheme)
    for index, (gold, predicted) in enumerate(zip(gold_spans, predicted_spans)):
        gold_side, predicted_side = classify_example(gold, predicted)
        for name, entity, others in gold_side:
            for tally in (overall, per_type.setdefault(entity.type, empty_tally())):
                tally["gold_entities"] += 1
                tally["counts"][name] += 1
            if name == "wrong_type":
                confusions[(entity.type, others[0].type)] += 1
            if len(examples[name]) < shown:
                examples[name].append(example_record(index, tokens[index], [entity], others, where))
        for name, entity, others in predicted_side:
            for tally in (overall, per_type.setdefault(entity.type, empty_tally())):
                tally["predicted_entities"] += 1
                tally["predicted_counts"][name] += 1
                if name == "spurious":
                    tally["counts"]["spurious"] += 1
            if name == "spurious" and len(examples[name]) < shown:
                examples[name].append(example_record(index, tokens[index], [], [entity], where))
    return dict(overall, metric_mode=mode, examples_in_split=len(gold_spans),
                per_type=dict(sorted(per_type.items())),
                type_confusions=[{"gold": gold, "predicted": predicted, "count": count}
                                 for (gold, predicted), count in confusions.most_common()],
                examples=examples)


def analyse_tag_errors(tokens, gold_tags, predicted_tags, where=None, shown=SHOWN_EXAMPLES):
    """The error analysis of a split whose tags name no entities (POS tags, nerkit.summary's
    `tags_without_entities`), word by word: seqeval would read such tags as made-up entities (NNP as an
    entity of type NP), so the entity categories would mean nothing.

    Returns `words`, `correct`, `accuracy`, `per_tag` ({tag: gold, correct and predicted words}, the most
    frequent gold tag first; errors_<split>.json sorts it by tag) and `tag_confusions` (`gold`,
    `predicted`, `count` of every wrong pair, most frequent first, ties in data order; the first `shown`
    with up to SHOWN_PER_CONFUSION `examples` each, in data order, recorded as the entity analysis records
    them, a word being a one-word span)."""
    per_tag, confusions, examples = {}, Counter(), {}
    words = correct = 0
    for index, (gold, predicted) in enumerate(zip(gold_tags, predicted_tags)):
        for position, (gold_tag, predicted_tag) in enumerate(zip(gold, predicted)):
            words += 1
            per_tag.setdefault(gold_tag, {"gold": 0, "correct": 0, "predicted": 0})["gold"] += 1
            per_tag.setdefault(predicted_tag, {"gold": 0, "correct": 0, "predicted": 0})["predicted"] += 1
            if gold_tag == predicted_tag:
                correct += 1
                per_tag[gold_tag]["correct"] += 1
                continue
            confusions[(gold_tag, predicted_tag)] += 1
            kept = examples.setdefault((gold_tag, predicted_tag), [])
            if shown and len(kept) < SHOWN_PER_CONFUSION:
                kept.append(example_record(index, tokens[index], [Span(gold_tag, position, position + 1)],
                                           [Span(predicted_tag, position, position + 1)], where))
    pairs = [{"gold": gold, "predicted": predicted, "count": count}
             | ({"examples": examples[(gold, predicted)]} if rank < shown else {})
             for rank, ((gold, predicted), count) in enumerate(confusions.most_common())]
    return {"unit": "word", "examples_in_split": len(gold_tags), "words": words, "correct": correct,
            "accuracy": correct / words if words else 0.0,
            "per_tag": dict(sorted(per_tag.items(), key=lambda item: (-item[1]["gold"], item[0]))),
            "tag_confusions": pairs}


def tag_summary_lines(analysis, split_name):
    """The log's summary of a word-by-word analysis: overall, the SHOWN_WORST_TAGS tags with most wrong words,
    the most frequent confusions."""
    lines = [f"Errors on {split_name}, word by word (the tags name no entities): {analysis['words']:,} words, "
             f"{analysis['correct']:,} correct ({analysis['accuracy']:.2%}), "
             f"{analysis['words'] - analysis['correct']:,} wrong."]
    worst = sorted(((tally["gold"] - tally["correct"], tag) for tag, tally in analysis["per_tag"].items()
                    if tally["gold"] > tally["correct"]), key=lambda item: (-item[0], item[1]))
    for wrong, tag in worst[:SHOWN_WORST_TAGS]:
        tally = analysis["per_tag"][tag]
        lines.append(f"  {tag}: {tally['correct']:,} of {tally['gold']:,} correct, {wrong:,} wrong.")
    if analysis["tag_confusions"]:
        lines.append(confusions_line(analysis["tag_confusions"], "confusions"))
    return lines


def confusions_line(pairs, title):
    """'  most frequent <title> (gold as predicted): A as B 3, ...', the first five of `pairs`."""
    shown = ", ".join(f"{item['gold']} as {item['predicted']} {item['count']:,}" for item in pairs[:5])
    return f"  most frequent {title} (gold as predicted): {shown}."


def tag_card_section(analysis, split_name):
    """Markdown lines for the model card: words per tag and what they were taken for."""
    confused = {}
    for item in analysis["tag_confusions"]:  # most frequent first: the first seen per gold tag is its top
        confused.setdefault(item["gold"], item)
    rows = []
    for tag, tally in analysis["per_tag"].items():
        if not tally["gold"]:
            continue
        top = confused.get(tag)
        rows.append(f"| {tag} | {tally['gold']} | {tally['correct']} | {tally['correct'] / tally['gold']:.4f} | "
                    + (f"{top['predicted']} ({top['count']})" if top else "") + " |")
    return [
        f"## Errors ({split_name}, per word)",
        "",
        "Words by gold tag, how many the model tagged right, and the tag it most often gave them instead; see "
        "`errors_" + split_name + ".json` for examples.",
        "",
        "| tag | words | correct | accuracy | most often taken for |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        f"| **overall** | {analysis['words']} | {analysis['correct']} | {analysis['accuracy']:.4f} | |",
        "",
    ]


def counts_text(counts, every=True):
    """'5 correct, 1 wrong type, ...'; without `every`, the categories that occur (and correct) only."""
    return ", ".join(f"{counts[name]:,} {TITLES[name]}" for name in CATEGORIES
                     if every or counts[name] or name == "correct")


def summary_lines(analysis, split_name):
    """A short readable summary of an analysis, for the log."""
    lines = [f"Errors on {split_name} (seqeval {analysis['metric_mode']} mode): {analysis['gold_entities']:,} gold "
             f"and {analysis['predicted_entities']:,} predicted entities; {counts_text(analysis['counts'])}."]
    for kind, tally in analysis["per_type"].items():
        lines.append(f"  {kind}: {tally['gold_entities']:,} gold; {counts_text(tally['counts'], every=False)}.")
    if analysis["type_confusions"]:
        lines.append(confusions_line(analysis["type_confusions"], "wrong types"))
    return lines


def card_section(analysis, split_name):
    """Markdown lines for the model card: the categories per entity type."""
    header = " | ".join(TITLES[name] for name in CATEGORIES)
    rows = [(kind, tally) for kind, tally in analysis["per_type"].items()] + [("**overall**", analysis)]
    return [
        f"## Errors ({split_name})",
        "",
        "Gold entities by what the model made of them, and predictions that overlap no gold entity "
        "(spurious); see `errors_" + split_name + ".json` for examples.",
        "",
        f"| entity type | gold entities | {header} |",
        "| --- " * (len(CATEGORIES) + 2) + "|",
        *[f"| {kind} | {tally['gold_entities']} | " + " | ".join(str(tally["counts"][name]) for name in CATEGORIES)
          + " |" for kind, tally in rows],
        "",
    ]
