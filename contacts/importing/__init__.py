"""Bulk contact import: readers, column mapping, the batch engine, jobs, admin and Celery tasks.

One engine serves every size: a two-row admin upload and a million-row file
both go through ``engine.run_import``, which cleans rows with the same helpers
as the agent API and writes them in batches with a fixed number of queries.
"""
