# The held-out kinds of the leave-kind-out runs, as patterns of the packed kind folders' names
# (scripts/pack_training_data.py): sourced by leave_kind_out.sh and train_device.sh.
# colour: the stage-1 H&E-like images; rare: the sizes with fewest images (mostly large,
# faint nuclei) and the grey 256x320 images.
# shellcheck disable=SC2034
colour='colour'
rare='512x640|603x1272|260x347|1040x1388|256x320-grey'
