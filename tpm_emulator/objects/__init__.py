"""Objects and hierarchies (Part 1, clauses 23-27; Part 3, clauses 12 and 24-28).

``public`` holds the Part 2 object structures, ``checks`` the public-area rules of
CreateChecks/PublicAttributesValidation/SchemeChecks, ``derive`` the deterministic
primary-key generation, ``protect`` the sensitive-area protection under a storage
parent, ``store`` the transient and persistent object tables, and ``handlers`` the
command bodies (declared in ``commands``).
"""
