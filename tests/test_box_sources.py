"""The box parsers (sources.boxes): PASCAL VOC XMLs with their surprises, hostile XML refused,
Kaggle's LOC CSVs, the odd cases counted and reported."""
import pytest

from imagenet_db.sources.boxes import (BoxCounts, BoxError, NameResolver, parse_loc_csv,
                                       parse_voc_xml)

WORDS = {"n02092002": "Scottish deerhound, deerhound", "n02119789": "kit fox, Vulpes macrotis",
         "n02100000": "hound", "n02100001": "hound dog, hound"}


def _xml(objects: str, size="<size><width>500</width><height>375</height></size>") -> bytes:
    return f"<annotation><filename>x</filename>{size}{objects}</annotation>".encode()


def _obj(name, xmin, ymin, xmax, ymax, difficult=0):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}"
            f"</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _parse(data, counts=None):
    return parse_voc_xml(data, "a.xml", NameResolver(WORDS), counts or BoxCounts())


def test_floats_difficult_and_size():
    found = _parse(_xml(_obj("n02119789", "12.0", "7.5", "400", "300.25", 1)))
    assert found.size == (500, 375)
    assert found.boxes == ((12.0, 7.5, 400.0, 300.25, "n02119789", True),)


def test_words_map_only_when_certain_and_odd_boxes_are_counted():
    counts = BoxCounts()
    found = _parse(_xml(_obj("Scottish_deerhound", 1, 2, 3, 4) + _obj("hound", 1, 2, 3, 4)
                        + _obj("n02119789", 10, 10, 10, 50) + _obj("n02119789", 50, 10, 20, 40)
                        + _obj("n02119789", -2, 0, 501, 40)), counts)
    assert [b[4] for b in found.boxes] == ["n02092002", "n02119789", "n02119789", "n02119789"]
    assert counts.odd == {"renamed": 1, "unknown_name": 1, "degenerate": 1, "reversed": 1,
                          "outside": 1}
    assert counts.boxes == 4 and counts.files == 1
    notes = "\n".join(counts.notes("train"))
    assert "'hound'" in notes and "Scottish_deerhound -> n02092002" in notes


def test_no_object_and_no_size():
    counts = BoxCounts()
    found = _parse(_xml("", size=""), counts)
    assert found.boxes == () and found.size is None and counts.odd == {"no_object": 1}


@pytest.mark.parametrize("data, says", [
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<annotation>&b;</annotation>', "refused"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
     b'<annotation>&e;</annotation>', "refused"),
    (b"<annotation><object>", "not a readable XML"),
    (_xml(_obj("n02119789", "1e", 2, 3, 4)), "bndbox/xmin '1e' is not a number"),
    (_xml(_obj("n02119789", "\u0661", 2, 3, 4)), "is not a number"),  # Arabic-Indic digit one
    (_xml(_obj("n02119789", 1, 2, "1e999", 4)), "bndbox/xmax '1e999' is not a finite number"),
    (_xml("<object><name>n02119789</name></object>"), "has no bndbox"),
])
def test_bad_xml_is_one_line_naming_the_file(data, says):
    with pytest.raises(BoxError) as err:
        _parse(data)
    assert str(err.value).startswith("a.xml: ") and says in str(err.value)
    assert "\n" not in str(err.value)


def test_loc_csv():
    data = (b"ImageId,PredictionString\nn02119789_1,n02119789 1 2 30 40 n02119789 5.5 6 7 8 \n"
            b"ILSVRC2012_val_00000001,n02092002 0 0 10 10\n")
    rows = parse_loc_csv(data, "LOC.csv")
    assert rows["n02119789_1"] == ((1.0, 2.0, 30.0, 40.0, "n02119789", False),
                                   (5.5, 6.0, 7.0, 8.0, "n02119789", False))
    for bad, says in ((b"Id,Boxes\n", "LOC.csv:1: the header"),
                      (b"ImageId,PredictionString\nx,n02119789 1 2 3\n", "LOC.csv:2: not"),
                      (b"ImageId,PredictionString\nx,n02119789 1 2 3 4\nx,n02119789 1 2 3 4\n",
                       "LOC.csv:3: x is listed twice"),
                      (b"ImageId,PredictionString\nx,n02119789 1 2 3 \xd9\xa1\n", "not ASCII")):
        with pytest.raises(BoxError, match=says):
            parse_loc_csv(bad, "LOC.csv")
