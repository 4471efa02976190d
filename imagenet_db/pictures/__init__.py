"""Pictures of a finished database: contact sheets (``imagenet-db show``) and the HTML report
(``imagenet-db report``, also written by ``create_imagenet`` into OUTDIR).

They read databases with ``imagenet_db.reader.DatumDB`` (read-only, any LMDB/LevelDB of
Caffe Datums, made by imagenet-db or by Caffe) and watch nothing while a build runs: they are
the after-the-fact side of the observers.

    sheet.py    contact_sheet(db, positions, class_names) -> BGR image + tile positions;
                write_sheet(DB, SheetOptions) -> the PNG of ``imagenet-db show``
    report.py   write_report(OUTDIR_or_DB): one self-contained HTML page (images embedded)
"""
