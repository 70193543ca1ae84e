"""A labelling callback for streams without a label property: a stand-in for a person (or a rule) who labels."""


def label(features, result):
    # The drifted machine in fault vibrates less than 3.5 mm/s.
    return 1 if float(features[1]) < 3.5 else 0
