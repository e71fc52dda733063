"""The course's machinery, apart from the library: what the lessons, the exercises and the demo use.

    moe_tf.course.grade        `moe-grade`, the exercise grader (with its pytest plugin and OS sandbox)
    moe_tf.course.train        `python -m moe_tf train`, the MNIST / IMDB comparison of `make demo`
    moe_tf.course.models       the comparison's model builders (`build_model`, `build_ngram_model`)
    moe_tf.course.notebook     what every notebook shares: the SMOKE switch, seeding, a timer
    moe_tf.course.toy          the 2-D toy problem of notebook 01
    moe_tf.course.plots        the training CLI's and the notebooks' plots (matplotlib)
    moe_tf.course.bench        the layers and the timed step of bench/dispatch.py

It lives apart so that building a MoE model with `moe_tf` (layers, routing, dispatch, losses, ...)
never imports pytest, matplotlib, tensorflow_datasets or the grader. Importing this package imports
nothing: each module loads what it needs when it is imported.
"""
