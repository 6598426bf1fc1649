# What the leave-kind-out and scale-recipe scripts share, sourced by leave_kind_out.sh,
# train_device.sh and train_scale_recipe.sh.
# shellcheck disable=SC2034
# The held-out kinds, as patterns of the packed kind folders' names
# (scripts/pack_training_data.py). colour: the stage-1 H&E-like images; rare: the sizes with
# fewest images (mostly large, faint nuclei) and the grey 256x320 images.
colour='colour'
rare='512x640|603x1272|260x347|1040x1388|256x320-grey'
# The two recipes compared: nuclei resized to 20 px (recorded for inference), zoom 0.4-2.5,
# haematoxylin-eosin stain jitter; and the shipped models' (natural scale, zoom 0.6-1.6, no
# stain jitter).
new=(--diameter 20 --zoom 0.4,2.5 --stain 0.2)
old=(--zoom 0.6,1.6 --stain 0)
