"""The raw export's format: file names, columns and the 13 root categories.

One place for what a marketplace export looks like, shared by the sample generator,
the importer (which validates against it) and the cleaning stages.
"""

from __future__ import annotations

PRODUCTS_FILE = "Products.csv"
IMAGES_FILE = "Images.csv"
IMAGES_DIR = "images"

# Column order as in the real export; the first column is an unnamed pandas index.
PRODUCT_COLUMNS = ("id", "product_name", "category", "product_description", "price", "location")
IMAGE_COLUMNS = ("id", "product_id", "bucket_link", "image_ref", "create_time")

# Records end with "\n"; descriptions may hold bare "\r" that must not split a record.
CSV_LINE_TERMINATOR = "\n"

CATEGORY_SEPARATOR = " / "

# The 13 root categories of the Gumtree export, in the order the label map uses (sorted).
ROOT_CATEGORIES = (
    "Appliances",
    "Baby & Kids Stuff",
    "Clothes, Footwear & Accessories",
    "Computers & Software",
    "DIY Tools & Materials",
    "Health & Beauty",
    "Home & Garden",
    "Music, Films, Books & Games",
    "Office Furniture & Equipment",
    "Other Goods",
    "Phones, Mobile Phones & Telecoms",
    "Sports, Leisure & Travel",
    "Video Games & Consoles",
)

# Image files are named "<Images.csv id>.<ext>"; these extensions are looked up.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
