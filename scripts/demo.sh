#!/usr/bin/env bash
# The README's first command: set up (once), import Fashion-MNIST, train a semi-supervised GAN
# with 100 labels for a few CPU minutes, train the supervised-only baseline, evaluate, report.
# Re-running it resumes/reuses the runs in train_dir/demo-* and is quick once they are done.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
STEPS=${DEMO_STEPS:-4000}
python download.py fashion_mnist
python trainer.py --dataset fashion_mnist --num_labeled 100 --max_steps "$STEPS" \
  --train_dir train_dir/demo-ssgan
python trainer.py --dataset fashion_mnist --num_labeled 100 --max_steps 1000 --supervised_only \
  --train_dir train_dir/demo-supervised
python evaler.py --dataset fashion_mnist --checkpoint train_dir/demo-ssgan
python - <<'PY'
import json
ssgan = json.load(open("train_dir/demo-ssgan/result.json"))
sup = json.load(open("train_dir/demo-supervised/result.json"))
print("=" * 72)
print(f"Fashion-MNIST, 100 labels, test accuracy (10,000 images):")
print(f"  semi-supervised GAN   {ssgan['test_accuracy']:.4f}   ({ssgan['step']} steps)")
print(f"  supervised only       {sup['test_accuracy']:.4f}   (same discriminator, labelled images only)")
print(f"Sample grids:  train_dir/demo-ssgan/samples/")
print(f"TensorBoard:   .venv/bin/tensorboard --logdir train_dir")
PY
