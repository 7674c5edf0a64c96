"""Expert review of a run's eval answers (`sftc review`): the judgements store
(`store`), the rows of a run (`rows`), the web page (`app`), the numbers the gates read
(`summary`) and corrections back into data (`export`).

`summary` and `store` import only the standard library: the gate code may use them
without the web framework.
"""
