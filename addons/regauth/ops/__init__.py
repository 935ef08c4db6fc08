"""What operators run and read, and the I/O it takes: the exchange log (its record
`exchange_record`, written by `exchange_log`, linked into `conversations`), metrics and health,
key files (`pki`), the embedded registry (`registry_process`), trust instructions (`trust`),
escaping untrusted text for terminals (`safe_text`), the upstream token fetcher (`fetch`) and the
default public URL."""
