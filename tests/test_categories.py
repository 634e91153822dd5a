import pytest

from quickdraw import categories
from quickdraw.errors import QuickDrawError


def test_official_metadata_comes_from_tfds():
  official = categories.official_categories()
  assert len(official) == 345
  cat = official["cat"]
  assert cat.url.endswith("/quickdraw_dataset/full/numpy_bitmap/cat.npy")
  assert cat.size > 10_000_000
  assert len(cat.sha256) == 64
  assert official["smiley face"].filename == "smiley face.npy"


def test_resolve_keeps_the_given_order():
  names = [c.name for c in categories.resolve_categories(
      ["dog", " cat", "smiley face"])]
  assert names == ["dog", "cat", "smiley face"]


@pytest.mark.parametrize("name, message", [
    ("cats", "'cats' is not a QuickDraw category; did you mean 'cat'?"),
    ("Cat", "'Cat' is not a QuickDraw category; did you mean 'cat'?"),
    ("smiley", "'smiley' is not a QuickDraw category; did you mean "
               "'smiley face'?"),
    ("xqzw", "'xqzw' is not a QuickDraw category; run quickdraw-prepare "
             "--list_categories to see the 345 official names"),
])
def test_unknown_name_suggests_the_closest(name, message):
  with pytest.raises(QuickDrawError) as e:
    categories.resolve_categories(["dog", name])
  assert str(e.value) == message


def test_equally_close_names_are_all_suggested():
  with pytest.raises(QuickDrawError) as e:
    categories.resolve_categories(["ca"])
  assert str(e.value) == (
      "'ca' is not a QuickDraw category; did you mean 'cat' or 'car'?")


def test_every_unknown_name_in_one_error_closest_first():
  with pytest.raises(QuickDrawError) as e:
    categories.resolve_categories(["dgo", "cat", "smily face", "xqzw"])
  assert str(e.value) == (
      "3 names are not QuickDraw categories: 'dgo' (did you mean 'dog' or "
      "'dragon'?), 'smily face' (did you mean 'smiley face'?), 'xqzw'; run "
      "quickdraw-prepare --list_categories to see the 345 official names")


def test_duplicates_and_empty_lists_fail():
  with pytest.raises(QuickDrawError) as e:
    categories.resolve_categories(["cat", "dog", "cat"])
  assert str(e.value) == "category 'cat' is listed twice; list each category once"
  with pytest.raises(QuickDrawError, match="^no categories chosen; pass"):
    categories.resolve_categories(["", " "])


def test_categories_file(tmp_path):
  path = tmp_path / "cats.txt"
  path.write_text("# my classes\ncat\n\n  smiley face  \n# dog\nThe Mona Lisa\n")
  assert categories.read_categories_file(str(path)) == [
      "cat", "smiley face", "The Mona Lisa"]
  with pytest.raises(QuickDrawError) as e:
    categories.read_categories_file(str(tmp_path / "missing.txt"))
  assert str(e.value) == (f"cannot read --categories_file {tmp_path}/missing.txt:"
                          " No such file or directory")
