"""Wrong answers to exercise 16 (the quiz) that tests/exercises/test_ex16_quiz.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex16_quiz.py and is replaced by
`new`, giving one classic wrong answer (or an answer in a form the module's instructions rule out).
"""

MUTANTS = [
    ("Q1_the_seeds_claim", 'Q1_MOE_REDUCES_PARAMETERS = "b"', 'Q1_MOE_REDUCES_PARAMETERS = "a"'),
    ("Q3_eight_times_seven", "Q3_MIXTRAL_TOTAL_PARAMS_BILLION = 46.7", "Q3_MIXTRAL_TOTAL_PARAMS_BILLION = 56"),
    ("Q9_alpha_forgotten", "Q9_SWITCH_LOSS_VALUE = 0.0125", "Q9_SWITCH_LOSS_VALUE = 1.25"),
    ("Q10_capacity_factor_forgotten", "Q10_EXPERT_CAPACITY = 320", "Q10_EXPERT_CAPACITY = 256"),
    ("Q14_biases_forgotten", "Q14_MOE_FFN_TOTAL_PARAMS = 16801800", "Q14_MOE_FFN_TOTAL_PARAMS = 16781312"),
    ("Q13_number_as_text", "Q13_SHAZEER_2017_MAX_PARAMS_BILLION = 137", 'Q13_SHAZEER_2017_MAX_PARAMS_BILLION = "137"'),
]
