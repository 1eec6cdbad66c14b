"""The fal-compatible dialect: its catalog of fal endpoint ids, its inputs and answers, the
queue routes, ``fal.run`` and the upload routes of fal's clients."""
