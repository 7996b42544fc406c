module bulkpipe

go 1.19
