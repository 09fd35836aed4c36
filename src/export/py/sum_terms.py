

# No NAG in this cell: a cross-attention sums its image terms (diffusers' processor, or
# sum_terms in ScaledIPProcessor).
join_terms = None
