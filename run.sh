#!/usr/bin/env bash
# Fine-tune a token classifier with run_ner.py.
#
#   bash run.sh                          # embedded default: packaged MiniLM on packaged WNUT-16, offline
#                                        # (4 epochs at 1.5e-4, batch 8, warmup; validation every 60 steps,
#                                        # a quarter epoch, in batches of 32, and the best of those
#                                        # checkpoints kept)
#   bash run.sh --num_train_epochs 1     # any extra flag goes to run_ner.py
#   RECIPE=classic bash run.sh           # the upstream recipe: BERT on CoNLL-2003 from the hub (online)
#
# OUTPUT_DIR (default output/<recipe>) and DATA_DIR (default data/wnut16) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")"

if [ "${RECIPE:-embedded}" = classic ]; then
  exec python run_ner.py \
    --model_name_or_path google-bert/bert-base-uncased \
    --dataset_name eriktks/conll2003 \
    --output_dir "${OUTPUT_DIR:-output/conll2003-bert}" \
    --overwrite_output_dir \
    --do_train --do_eval \
    "$@"
fi

DATA_DIR=${DATA_DIR:-data/wnut16}
python -m nerkit.embedded "$DATA_DIR" > /dev/null
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec python run_ner.py \
  --model_name_or_path "$(python -m nerkit.embedded --model-path)" \
  --train_file "$DATA_DIR/train.conll" \
  --validation_file "$DATA_DIR/validation.conll" \
  --test_file "$DATA_DIR/test.conll" \
  --output_dir "${OUTPUT_DIR:-output/wnut16-minilm}" \
  --overwrite_output_dir \
  --do_train --do_eval --do_predict \
  --num_train_epochs 4 \
  --learning_rate 1.5e-4 \
  --warmup_steps 0.1 \
  --per_device_train_batch_size 8 \
  --per_device_eval_batch_size 32 \
  --eval_strategy steps \
  --eval_steps 60 \
  --logging_strategy steps \
  --logging_steps 60 \
  --save_strategy steps \
  --save_steps 60 \
  --save_total_limit 1 \
  --save_only_model \
  --load_best_model_at_end \
  --metric_for_best_model f1 \
  --return_entity_level_metrics \
  --report_to none \
  "$@"
