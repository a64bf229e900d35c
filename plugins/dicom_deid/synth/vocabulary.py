"""The words the generator writes: patient names in each character set, staff, sites,
addresses, body parts, series labels. Data only, so the planning code stays readable."""

from __future__ import annotations

ASCII_FAMILY = (
    "Thornbury", "Whitcombe", "Ashdown", "Pemberton", "Kingsolver", "Halloran",
    "Featherstone", "Castellane", "Underhill", "Blackwood", "Marchetti", "Oyelaran",
    "Fairweather", "Lindqvist", "Dunmore", "Ellsworth", "Quennell", "Radcliffe",
    "Stanhope", "Treloar", "Vanstone", "Westerby", "Yardley", "Brightwell",
)  # fmt: skip
ASCII_GIVEN = (
    "Jonathan", "Margaret", "Eleanor", "Theodore", "Beatrice", "Cornelius", "Rosalind",
    "Frederick", "Henrietta", "Lucinda", "Bartholomew", "Genevieve", "Ambrose",
    "Clementine", "Desmond", "Winifred", "Percival", "Josephine", "Augustin", "Imogen",
)  # fmt: skip
LATIN1_FAMILY = (
    "Großkopf", "Lefèvre", "Sørensen", "Ibáñez", "Brönnimann", "Magalhães", "Åkerlund",
    "Nyström", "Castaño", "Dürrenmatt", "Løvengård", "Boëtie",
)  # fmt: skip
LATIN1_GIVEN = (
    "Jürgen", "Amélie", "Käthe", "Inês", "Björn", "Zoé", "Raúl", "Frédéric", "Søren",
    "Íñigo", "Mónica", "Loïc",
)  # fmt: skip
UTF8_NAMES = (  # (family, given, roman family, roman given)
    ("Dvořák", "Tomáš", "Dvorak", "Tomas"),
    ("Nowakowska", "Łucja", "Nowakowska", "Lucja"),
    ("Kovačević", "Dragana", "Kovacevic", "Dragana"),
    ("Παπαδάκης", "Ελένη", "Papadakis", "Eleni"),
    ("Петрова", "Анастасия", "Petrova", "Anastasia"),
    ("Şahinoğlu", "Çağla", "Sahinoglu", "Cagla"),
    ("Wiśniewski", "Paweł", "Wisniewski", "Pawel"),
    ("Nguyễn", "Thị Hương", "Nguyen", "Thi Huong"),
)
# (romaji family, romaji given, kanji family, kanji given, kana family, kana given). No
# character whose JIS X 0208 code contains 0x5C: readers would split the value at that "\\".
JAPANESE_NAMES = (
    ("Takeda", "Shinji", "武田", "信二", "たけだ", "しんじ"),
    ("Morikawa", "Yumiko", "森川", "由美子", "もりかわ", "ゆみこ"),
    ("Hoshino", "Kenta", "星野", "健太", "ほしの", "けんた"),
    ("Ishikawa", "Naoko", "石川", "直子", "いしかわ", "なおこ"),
    ("Fujita", "Daisuke", "藤田", "大輔", "ふじた", "だいすけ"),
    ("Nakagawa", "Emiko", "中川", "恵美子", "なかがわ", "えみこ"),
)
STAFF = (  # PN values, shared out among the sites' staff
    "Okafor^Bernadette", "Villiers^Rupert", "Castellanos^Mireille", "Abernethy^Douglas",
    "Lindgren^Astrid", "Penhaligon^Morwenna", "Fitzgerald^Declan", "Rasmussen^Ingrid",
    "Achterberg^Wouter", "Szabados^Katalin", "Montgomery^Felix", "Delacroix^Odile",
)  # fmt: skip
INSTITUTIONS = (  # (name, address, code)
    ("Westbrook Regional Hospital", "14 Quarry Lane, Westbrook WB4 7QT", "WBR"),
    ("St. Aldric Medical Centre", "220 Fenwick Road, Harlow Cross HC2 9LD", "SAM"),
    ("Kessington Royal University Hospital", "7 Observatory Way, Kessington KS1 3RA", "KUC"),
)
STREETS = ("Linden Crescent", "Mortlake Street", "Saffron Row", "Heron Close", "Gallows Hill")
TOWNS = ("Westbrook", "Harlow Cross", "Kessington", "Bramford Vale", "Ottery Mead")
ETHNIC_GROUPS = ("White", "Asian", "Black", "Hispanic", "Mixed")

# Charset per patient, cycled so that a handful of patients covers every repertoire.
# Patient 0 is Latin-1 so the bad-charset input always has a non-ASCII source.
CHARSET_CYCLE: tuple[tuple[str, ...], ...] = (
    ("ISO_IR 100",), (), ("", "ISO 2022 IR 87"), ("ISO_IR 192",), (), ("ISO_IR 6",),
    (), ("ISO_IR 100",), (), ("", "ISO 2022 IR 87"), (), ("ISO_IR 192",),
)  # fmt: skip

BODY_PARTS = {  # Body Part Examined, per study modality
    "CT": ("CHEST", "ABDOMEN", "HEAD"),
    "MR": ("BRAIN", "LSPINE", "ABDOMEN"),
    "US": ("ABDOMEN", "PELVIS"),
    "CR": ("CHEST", "ABDOMEN", "SKULL"),
}
SERIES_LABELS = {  # Series Description stems, per series kind
    "CT": ("AX 5mm", "AX 1.25mm", "COR MPR"),
    "MR": ("AX T2 FSE", "SAG T1", "AX FLAIR"),
    "US": ("Abd survey", "Doppler", "Cine loops"),
    "CR": ("PA view", "AP view"),
    "SC": ("Dose Report",),
    "SR": ("Radiology report",),
}
