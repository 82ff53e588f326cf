#!/usr/bin/env bash
# The README's first command: set up (once), import Fashion-MNIST, train a semi-supervised GAN
# with 100 labels for a few CPU minutes, train the supervised-only baseline, evaluate, report.
# Re-running it resumes/reuses the runs in train_dir/demo-* and is quick once they are done.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
STEPS=${DEMO_STEPS:-3000}
# Named by their defaults: a run of an earlier default (the mlp in train_dir/demo-ssgan, lenet with the mlp G in
# train_dir/demo-lenet-ssgan, no mirrored images in train_dir/demo-lenet-convg-*, only mirrored labelled images in
# train_dir/demo-lenet-convg-flip-*, G's update alternating with D's in train_dir/demo-lenet-convg-flipu-ssgan,
# lenet's D 32 wide in train_dir/demo-lenet-convg-flipu-{joint-ssgan,supervised}) is not resumed with others.
export SSGAN=train_dir/demo-lenet40-convg-flipu-joint-ssgan SUP=train_dir/demo-lenet40-convg-flipu-supervised
python download.py fashion_mnist
python trainer.py --dataset fashion_mnist --num_labeled 100 --max_steps "$STEPS" \
  --train_dir "$SSGAN"
python trainer.py --dataset fashion_mnist --num_labeled 100 --max_steps 1000 --supervised_only \
  --train_dir "$SUP"
python evaler.py --dataset fashion_mnist --checkpoint "$SSGAN"
python - <<'PY'
import json, os
ssgan = json.load(open(os.path.join(os.environ["SSGAN"], "result.json")))
sup = json.load(open(os.path.join(os.environ["SUP"], "result.json")))
print("=" * 72)
print(f"Fashion-MNIST, 100 labels, test accuracy (10,000 images):")
print(f"  semi-supervised GAN   {ssgan['test_accuracy']:.4f}   ({ssgan['step']} steps)")
print(f"  supervised only       {sup['test_accuracy']:.4f}   (same discriminator, labelled images only)")
print(f"Sample grids:  {os.environ['SSGAN']}/samples/")
print(f"Confusion:     {os.environ['SSGAN']}/confusion_{os.path.basename(ssgan['checkpoint'])}.png")
print(f"Curves:        {os.environ['SSGAN']}/curves.png")
print(f"TensorBoard:   .venv/bin/tensorboard --logdir train_dir")
PY
