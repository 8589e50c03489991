from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("room", models.CharField(db_index=True, max_length=50)),
                ("text", models.CharField(max_length=1000)),
                ("sent", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["sent", "id"]},
        ),
    ]
